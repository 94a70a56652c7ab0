"""Store rows -> the JSON objects of OpenAI's specification.

Each object is its schema's fields in the specification's order: read from the row's attribute of the same name,
unless given (the object type, and a parent's id the caller already knows, which saves a query).
"""

from __future__ import annotations

from .models import Assistant, Message, Run, RunStep, Thread

ASSISTANT = ("id", "object", "created_at", "name", "description", "model", "instructions", "tools", "tool_resources",
             "metadata", "temperature", "top_p", "response_format")
THREAD = ("id", "object", "created_at", "metadata", "tool_resources")
MESSAGE = ("id", "object", "created_at", "thread_id", "status", "incomplete_details", "completed_at", "incomplete_at",
           "role", "content", "assistant_id", "run_id", "attachments", "metadata")
RUN = ("id", "object", "created_at", "thread_id", "assistant_id", "status", "required_action", "last_error",
       "expires_at", "started_at", "cancelled_at", "failed_at", "completed_at", "incomplete_details", "model",
       "instructions", "tools", "metadata", "usage", "temperature", "top_p", "max_prompt_tokens",
       "max_completion_tokens", "truncation_strategy", "tool_choice", "parallel_tool_calls", "response_format")
RUN_STEP = ("id", "object", "created_at", "assistant_id", "thread_id", "run_id", "type", "status", "step_details",
            "last_error", "expired_at", "cancelled_at", "failed_at", "completed_at", "metadata", "usage")


class Encoded(str):
    """A response body already encoded as JSON (a page built from the JSON text the database stores): the views
    send it as it is instead of encoding a dict."""


def _fields(row: Assistant | Thread | Message | Run | RunStep, names: tuple[str, ...], **given: object) -> dict:
    return {name: given[name] if name in given else getattr(row, name) for name in names}


def assistant(a: Assistant) -> dict:
    return _fields(a, ASSISTANT, object="assistant")


def thread(t: Thread) -> dict:
    return _fields(t, THREAD, object="thread")


def message(m: Message, thread_id: str | None = None) -> dict:
    return _fields(m, MESSAGE, object="thread.message", thread_id=thread_id or m.thread.id)


def run(r: Run, thread_id: str | None = None) -> dict:
    return _fields(r, RUN, object="thread.run", thread_id=thread_id or r.thread.id)


def run_step(s: RunStep, run_id: str | None = None, search_content: bool = False) -> dict:
    """``search_content``: with the results of file_search calls and their content (``include[]``)."""
    data = _fields(s, RUN_STEP, object="thread.run.step", run_id=run_id or s.run.id)
    if s.type == "tool_calls":
        data["step_details"] = _tool_calls(s.step_details, search_content)
    return data


def _tool_calls(details: dict, search_content: bool) -> dict:
    """A file_search call as the specification has it: its ranking options, and its results (with their content)
    only when asked; the rest stored with it (``knowledge.run_search``) is left out."""
    if not any(call.get("type") == "file_search" for call in details.get("tool_calls", [])):
        return details
    calls = []
    for call in details["tool_calls"]:
        if call.get("type") == "file_search":
            search = {"ranking_options": call["file_search"]["ranking_options"]}
            if search_content:
                search["results"] = call["file_search"]["results"]
            call = {"id": call["id"], "type": "file_search", "file_search": search}
        calls.append(call)
    return {**details, "tool_calls": calls}


def deleted(object_type: str, object_id: str) -> dict:
    return {"id": object_id, "object": f"{object_type}.deleted", "deleted": True}
