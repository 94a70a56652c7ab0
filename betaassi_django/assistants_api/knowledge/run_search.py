"""The ``file_search`` tool inside a run: the app searches for the model, in the same execution.

A run whose tools include ``file_search``, and whose assistant or thread has a vector store, offers the model a
*function* tool named ``file_search`` (``SEARCH_FUNCTION``: ``{"queries": [...]}``, ``{"query": "..."}`` also
taken), so any model endpoint can use it (Responses and Chat Completions alike). When the model calls it, the
search runs here (``search.search`` over the assistant's and the thread's stores), the run gets a completed
``tool_calls`` step with one ``file_search`` call per model call (streamed as OpenAI streams it: created,
in_progress, a delta naming the calls, completed), and the model is asked again with the results, with no round
trip through the client. Each result is given to the model with a citation marker ``【<call>:<result>†<file
name>】``; the markers the reply contains become its ``file_citation`` annotations (``annotations``).

The step's calls are stored with what the serializer leaves out: the model's ``arguments``, the ``output`` it was
given and the call's number in the run (``round``), so that a run continued after function outputs sends the same
conversation again (``prompt._transcript``), and the results' ``content`` (returned with ``include[]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from django.db import transaction

from .. import serializers
from ..engine import engine
from ..ids import now
from ..models import Assistant, Message, RunStep, Thread
from ..responders.interface import Reply, Responder, ResponderError, ToolCall, ToolRound
from ..run_start import Started, check_writable
from . import search, vector_stores

SEARCH_NAME = "file_search"
#: Search rounds one execution makes at most; the model is then asked without the tool (it must answer).
MAX_ROUNDS = 3
#: Search calls of one model turn that are searched; any more get no results (a model looping on calls).
MAX_CALLS = 8
#: The specification's default ``max_num_results`` (``gpt-4*`` models).
DEFAULT_MAX_RESULTS = 20
MARKER = re.compile(r"【(\d{1,6}):(\d{1,6})†([^】\n]{0,300})】")

SEARCH_FUNCTION = {"type": "function", "function": {
    "name": SEARCH_NAME,
    "description": ("Search the files the user and the assistant provided. Returns the most relevant excerpts, "
                    "each with a citation marker such as 【0:0†handbook.pdf】. Base the answer on them and cite each "
                    "excerpt used by writing its marker, exactly as given, right after the text it supports."),
    "parameters": {"type": "object", "properties": {"queries": {
        "type": "array", "items": {"type": "string"},
        "description": "One or more search queries (keywords or a question)."}}, "required": ["queries"]}}}


@dataclass
class Plan:
    """What this execution may search, with the citations known so far (``"<call>:<result>"`` -> file id)."""

    store_ids: list[str]
    max_num_results: int
    ranking_options: dict
    calls: int = 0
    citations: dict[str, str] = field(default_factory=dict)
    include_content: bool = False


def _store_ids(resources: dict | None) -> list[str]:
    search_resources = (resources or {}).get("file_search") or {}
    return [i for i in search_resources.get("vector_store_ids") or [] if isinstance(i, str)]


def plan(started: Started) -> Plan | None:
    """The run's search (None: it has no ``file_search`` tool, ``tool_choice`` is ``none``, or no store)."""
    run = started.run
    tool = next((t for t in run.tools or [] if isinstance(t, dict) and t.get("type") == "file_search"), None)
    if tool is None or run.tool_choice == "none":
        return None
    ids = _store_ids(Assistant.objects.filter(id=run.assistant_id).values_list("tool_resources", flat=True).first())
    ids += _store_ids(Thread.objects.filter(pk=run.thread_id).values_list("tool_resources", flat=True).first())
    ids = list(dict.fromkeys(ids))
    if not ids:
        return None
    expired = vector_stores.first_expired(ids)
    if expired is not None:  # as OpenAI's: a run on a thread whose store expired fails (its files are not searched)
        raise ResponderError("invalid_prompt", f"Vector store '{expired}' has expired. Create a new vector store "
                                               f"with its files and attach it to the thread or the assistant.")
    options = tool.get("file_search") or {}
    ranking = options.get("ranking_options") or {}
    found = Plan(ids, options.get("max_num_results") or DEFAULT_MAX_RESULTS,
                 {"ranker": ranking.get("ranker") or "auto", "score_threshold": float(ranking.get("score_threshold")
                                                                                       or 0.0)},
                 include_content=bool(getattr(run, "include_search_content", False)))
    if not started.first:  # earlier searches of this run: their markers may be cited again
        for details in RunStep.objects.filter(run_id=run.pk, type="tool_calls").values_list("step_details",
                                                                                            flat=True):
            for call in details.get("tool_calls", []):
                if call.get("type") == "file_search":
                    found.calls = max(found.calls, call.get("round", 0) + 1)
                    for index, result in enumerate(call["file_search"].get("results", [])):
                        found.citations[f"{call.get('round', 0)}:{index}"] = result["file_id"]
    return found


def _queries(arguments: str) -> list[str]:
    """The model's queries: ``{"queries": [...]}`` or ``{"query": "..."}`` (anything else searches nothing)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    queries = value.get("queries")
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list):
        queries = [value.get("query")]
    return [q for q in queries if isinstance(q, str) and q.strip()][:5]


def _search(found: Plan, arguments: str) -> list[search.Hit]:
    """Each query's hits merged (a chunk found twice keeps its best score), best first."""
    best: dict[tuple[str, int], search.Hit] = {}
    for query in _queries(arguments):
        for hit in search.search(found.store_ids, query, max_num_results=found.max_num_results,
                                 score_threshold=found.ranking_options["score_threshold"]):
            key = (hit.file_id, hit.chunk_index)
            if key not in best or hit.score > best[key].score:
                best[key] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:found.max_num_results]


def marker(call: int, index: int, filename: str) -> str:
    return f"【{call}:{index}†{filename.replace('】', ')')}】"


def _record(started: Started, found: Plan, calls: list[ToolCall], reply: Reply) -> tuple[list[ToolCall], list]:
    """Search for each call and store the completed ``tool_calls`` step; its events and the calls with outputs.

    A reply message written with the start and never announced is deleted here (as ``run_end.finish`` does before
    ``requires_action``), so the reply's message step is created after this step, in the order of a listing."""
    run = started.run
    stored, answered = [], []
    for position, call in enumerate(calls):
        hits = _search(found, call.arguments) if position < MAX_CALLS else []
        number, found.calls = found.calls, found.calls + 1
        results = []
        for index, hit in enumerate(hits):
            found.citations[f"{number}:{index}"] = hit.file_id
            results.append({"file_id": hit.file_id, "file_name": hit.filename, "score": max(0.0, min(1.0, hit.score)),
                            "content": [{"type": "text", "text": hit.text}]})
        output = json.dumps({"results": [{"citation": marker(number, i, h.filename), "file_name": h.filename,
                                          "score": round(h.score, 4), "text": h.text} for i, h in enumerate(hits)]},
                            ensure_ascii=False)
        stored.append({"id": call.id, "type": "file_search",
                       "file_search": {"ranking_options": found.ranking_options, "results": results},
                       "arguments": call.arguments, "output": output, "round": number})
        answered.append(ToolCall(call.id, SEARCH_NAME, call.arguments, output))
    stamp = now()
    usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
             "total_tokens": reply.prompt_tokens + reply.completion_tokens}
    with transaction.atomic():
        check_writable(run.id)
        if started.message is not None and not started.opened:
            RunStep.objects.filter(pk=started.step.pk).delete()
            Message.objects.filter(pk=started.message.pk).delete()
            started.message = started.step = None
        step = RunStep.objects.create(
            run=run, thread_id=run.thread.id, assistant_id=run.assistant_id, type="tool_calls", status="completed",
            completed_at=stamp, created_at=stamp, usage=usage,
            step_details={"type": "tool_calls", "tool_calls": stored},
            carried_items=list(getattr(reply, "carried_items", None) or []) or None)
    vector_stores.touch(found.store_ids)
    return answered, _events(step, run.id, stored, found.include_content)


def _events(step: RunStep, run_id: str, stored: list[dict], content: bool) -> list[tuple[str, dict]]:
    """As OpenAI streams a file_search step: it starts with no calls, a delta names them, it completes."""
    opening = serializers.run_step(step, run_id)
    opening.update(status="in_progress", completed_at=None, usage=None,
                   step_details={"type": "tool_calls", "tool_calls": []})
    delta = {"id": step.id, "object": "thread.run.step.delta", "delta": {"step_details": {
        "type": "tool_calls", "tool_calls": [{"index": i, "id": c["id"], "type": "file_search", "file_search": {}}
                                             for i, c in enumerate(stored)]}}}
    return [("thread.run.step.created", opening), ("thread.run.step.in_progress", opening),
            ("thread.run.step.delta", delta),
            ("thread.run.step.completed", serializers.run_step(step, run_id, search_content=content))]


def _forced(tool_choice):
    """``{"type": "file_search"}`` as the function the model is offered."""
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "file_search":
        return {"type": "function", "function": {"name": SEARCH_NAME}}
    return tool_choice


def _after_search(tool_choice):
    """A choice that forced a tool (the search, or ``required``) is ``auto`` once the model searched."""
    if tool_choice == "required" or tool_choice == _forced({"type": "file_search"}):
        return "auto"
    return tool_choice


async def stream(run_id: str, started: Started, responder: Responder, reply: Reply) -> AsyncIterator[str | ToolCall]:
    """The responder's reply, with the run's searches done in between (the responder as it is without them)."""
    found = await engine.db(plan, started) if any(
        isinstance(t, dict) and t.get("type") == "file_search" for t in started.run.tools or []) else None
    request = started.request
    if found is None:
        async for piece in responder.stream(request, reply):
            yield piece
        return
    started.citations = found.citations
    request = replace(request, tools=[*request.tools, SEARCH_FUNCTION], tool_choice=_forced(request.tool_choice),
                      search=True)
    for rounds in range(MAX_ROUNDS + 1):
        if rounds == MAX_ROUNDS:  # enough searching: the model answers from what it has
            request = replace(request, tools=[t for t in request.tools if t is not SEARCH_FUNCTION], search=False)
        searches, functions = [], False
        async for piece in responder.stream(request, reply):
            if isinstance(piece, ToolCall) and piece.name == SEARCH_NAME and request.search:
                searches.append(piece)
                continue
            functions = functions or isinstance(piece, ToolCall)
            yield piece
        if not searches:
            return
        answered, events = await engine.db(_record, started, found, searches, reply)
        for event, data in events:
            engine.publish(run_id, event, data)
        carried = list(getattr(reply, "carried_items", None) or [])
        # The search step holds this model call's usage; the run's is summed over its steps from here on.
        used = reply.completion_tokens
        reply.prompt_tokens = reply.completion_tokens = 0
        if hasattr(reply, "carried_items"):
            reply.carried_items = []
        started.first = False
        if functions or getattr(reply, "incomplete", None):  # the client's calls end this execution
            return
        budget = getattr(request, "max_completion_tokens", None)
        changes: dict = {"messages": [*request.messages, ToolRound(answered, carried) if carried
                                      else ToolRound(answered)],
                         "tool_choice": _after_search(request.tool_choice)}
        if budget is not None:
            if budget - used <= 0:
                reply.incomplete = "max_completion_tokens"
                return
            changes["max_completion_tokens"] = budget - used
        request = replace(request, **changes)


def annotations(text: str, citations: dict[str, str]) -> list[dict]:
    """The reply's ``file_citation`` annotations: one per marker naming a result the model was given (by its
    ``<call>:<result>`` numbers; the file name in it is not checked). Indices are in characters (code points)."""
    if "【" not in text or not citations:
        return []
    found = []
    for match in MARKER.finditer(text):
        file_id = citations.get(f"{int(match[1])}:{int(match[2])}")
        if file_id is not None:
            found.append({"type": "file_citation", "text": match[0], "start_index": match.start(),
                          "end_index": match.end(), "file_citation": {"file_id": file_id}})
    return found


def annotations_delta(message: Message) -> dict:
    """The reply's annotations as one ``thread.message.delta`` (each with its index), sent before it completes."""
    cited = message.content[0]["text"]["annotations"]
    return {"id": message.id, "object": "thread.message.delta", "delta": {"content": [
        {"index": 0, "type": "text", "text": {"annotations": [{"index": i, **a} for i, a in enumerate(cited)]}}]}}
