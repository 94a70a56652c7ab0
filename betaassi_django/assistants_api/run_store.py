"""The run half of the store behind the /v1 views: runs, their tool outputs and their steps.

Creating a run (and a thread with its run) inserts it with the messages it adds, checks the thread has no other
active run, and hands the run to the engine on commit (``execution.execute_run``); cancelling flags it for the
execution wherever it runs. Threads, messages and assistants are in ``store``.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import QueryDict

from betaassi_django import conf

from . import run_options, serializers, statements
from .engine import engine
from .errors import invalid, not_found
from .execution import execute_run, started_here
from .ids import now
from .knowledge import resources
from .limits import plausible_id
from .models import Assistant, Message, Run, RunStep, Thread
from .pagination import page
from .store import active_run, check_id, get_assistant, get_thread, insert_thread, modify_metadata, new_message

INCLUDE_VALUES = ("step_details.tool_calls[*].file_search.results[*].content",)


def check_include(query: QueryDict) -> None:
    for value in query.getlist("include[]"):
        if value not in INCLUDE_VALUES:
            raise invalid(
                f"Invalid value for 'include[]': '{value[:100]}'. Supported values are: '{INCLUDE_VALUES[0]}'.",
                param="include[]",
                code="invalid_value",
            )


def _new_run(run_id: str, thread: Thread, assistant: Assistant, body: dict) -> Run:
    created = now()

    def pick(field, default):
        value = body.get(field)
        return default if value is None else value

    instructions = body.get("instructions")
    if instructions is None:
        instructions = assistant.instructions or ""
    return Run(
        id=run_id,
        thread=thread,
        assistant_id=assistant.id,
        created_at=created,
        expires_at=created + conf.get().run_expires_seconds,
        model=pick("model", assistant.model),
        instructions=instructions,
        additional_instructions=body.get("additional_instructions"),
        tools=pick("tools", assistant.tools),
        metadata=body.get("metadata") or {},
        temperature=pick("temperature", assistant.temperature),
        top_p=pick("top_p", assistant.top_p),
        max_prompt_tokens=body.get("max_prompt_tokens"),
        max_completion_tokens=body.get("max_completion_tokens"),
        truncation_strategy=pick("truncation_strategy", {"type": "auto", "last_messages": None}),
        tool_choice=pick("tool_choice", "auto"),
        parallel_tool_calls=pick("parallel_tool_calls", True),
        response_format=pick("response_format", assistant.response_format or "auto"),
        reasoning_effort=pick("reasoning_effort", assistant.reasoning_effort),
    )


def _check_truncation(body: dict) -> None:
    strategy = body.get("truncation_strategy")
    if strategy and strategy["type"] == "last_messages" and not strategy.get("last_messages"):
        raise invalid(
            "'truncation_strategy.last_messages' is required when its type is 'last_messages'.",
            param="truncation_strategy.last_messages",
            code="missing_required_parameter",
        )


def _insert_run(run_id: str, thread: Thread, body: dict, assistant: Assistant | None = None,
                may_be_busy: bool = True) -> Run:
    """``assistant``: already read (``_lookup``); ``may_be_busy``: False when the thread is known to have no
    active run (a new thread, or ``_lookup`` said so): the active-run query is then skipped."""
    _check_truncation(body)
    if assistant is None:
        assistant = get_assistant(body["assistant_id"])
    tools = body.get("tools")
    run_options.check_tool_choice(body.get("tool_choice"), assistant.tools if tools is None else tools)
    run_options.check_response_format(body.get("response_format"))
    active = active_run(thread) if may_be_busy else None
    if active is not None:
        raise invalid(f"Thread {thread.id} already has an active run {active.id}.")
    searched = resources.check_attachments(body.get("additional_messages") or [], "additional_messages")
    added = Message.objects.bulk_create([new_message(thread, m) for m in body.get("additional_messages") or []])
    resources.attach(thread, searched)  # file_search attachments: into the thread's vector store
    run = _new_run(run_id, thread, assistant, body)
    # include[] on the create: the events of its file_search steps carry their results (knowledge.run_search).
    run.include_search_content = bool(body.get("include[]"))
    try:
        # No savepoint of its own: every caller is inside an atomic block, which a refusal leaves with an
        # exception (so rolls back).
        run.save(force_insert=True)
    except IntegrityError:
        # Another process started a run between our check and our insert.
        raise invalid(f"Thread {thread.id} already has an active run.") from None
    # An in-process turn's queue (run_events.listening), before the run can start; with the messages added with
    # the run, which the turn shows its user (rather than listing the thread for them).
    engine.adopt_listener(run_id, [serializers.message(m, thread.id) for m in added])
    # Started on this thread as the creation commits (execution.started_here), then executed by the engine.
    transaction.on_commit(lambda: engine.submit(run_id, started_here(run_id, run)))
    return run


def _lookup(thread_id: str, assistant_id: str) -> tuple[Thread, Assistant, bool] | None:
    """The thread, the assistant and whether the thread has an active run, in one query (SQL compiled once:
    ``statements.run_lookup``); None when either is missing (the caller then looks them up one by one, for the
    error the API gives)."""
    if not (plausible_id(thread_id) and isinstance(assistant_id, str) and plausible_id(assistant_id)):
        return None
    found = statements.run_lookup(thread_id, assistant_id)
    if found is None:
        return None
    assistant, thread_seq, busy = found
    # Only the keys: the run and its messages refer to the thread, nothing reads its other fields.
    return Thread(seq=thread_seq, id=thread_id), assistant, busy


def create_run(thread_id: str, run_id: str, body: dict) -> dict:
    with transaction.atomic():
        found = _lookup(thread_id, body["assistant_id"])
        if found is None:  # one of them is missing: the ordinary order of lookups says which, as before
            run = _insert_run(run_id, get_thread(thread_id), body)
        else:
            thread, assistant, busy = found
            run = _insert_run(run_id, thread, body, assistant, may_be_busy=busy)
        return serializers.run(run, thread_id)


def create_thread_and_run(run_id: str, body: dict) -> tuple[dict, dict]:
    thread_body = body.get("thread") or {}
    if body.get("tool_resources") is not None:
        thread_body = {**thread_body, "tool_resources": body["tool_resources"]}
    with transaction.atomic():
        assistant = get_assistant(body["assistant_id"])
        thread = insert_thread(thread_body, "thread.messages")
        run = _insert_run(run_id, thread, {k: v for k, v in body.items() if k not in ("thread", "tool_resources")},
                          assistant, may_be_busy=False)  # a thread created here has no run yet
        return serializers.thread(thread), serializers.run(run, thread.id)


def get_run(thread_id: str, run_id: str) -> Run:
    check_id("thread", thread_id)
    check_id("run", run_id)
    try:
        run = Run.objects.get(id=run_id, thread__id=thread_id)
    except Run.DoesNotExist:
        get_thread(thread_id)
        raise not_found("run", run_id) from None
    if run.is_active and run.expires_at is not None and run.expires_at < now():
        # Its process died (or it waited too long for tool outputs): it will never finish.
        Run.objects.filter(pk=run.pk, status=run.status).update(status="expired")
        run.status = "expired"
    return run


def retrieve_run(thread_id: str, run_id: str) -> dict:
    return serializers.run(get_run(thread_id, run_id), thread_id)


def modify_run(thread_id: str, run_id: str, body: dict) -> dict:
    return modify_metadata(get_run, serializers.run, thread_id, run_id, body)


def list_runs(thread_id: str, query: QueryDict) -> dict:
    thread = get_thread(thread_id)
    return page(Run.objects.filter(thread=thread), query, lambda r: serializers.run(r, thread_id))


def cancel_run(thread_id: str, run_id: str) -> dict:
    with transaction.atomic():
        run = get_run(thread_id, run_id)
        if run.status not in ("queued", "in_progress", "requires_action"):
            raise invalid(f"Cannot cancel run with status '{run.status}'.", param="run_id")
        if run.status == "requires_action":
            # Nothing is executing: the run stops here, with the calls it waited for.
            run.status, run.cancelled_at, run.required_action = "cancelled", now(), None
            RunStep.objects.filter(run=run, status="in_progress").update(status="cancelled", cancelled_at=now())
        else:
            run.status = "cancelling"
        run.save(update_fields=["status", "cancelled_at", "required_action"])
    engine.request_cancel(run_id)
    return serializers.run(run, thread_id)


def _pending_tool_step(run: Run) -> RunStep:
    return RunStep.objects.filter(run=run, type="tool_calls", status="in_progress").order_by("-seq").first()


def _check_tool_outputs(run: Run, outputs: list[dict]) -> dict[str, str]:
    """Outputs by call id: exactly one for each call the run waits for (as OpenAI requires)."""
    expected = [call["id"] for call in run.required_action["submit_tool_outputs"]["tool_calls"]]
    given: dict[str, str] = {}
    for index, item in enumerate(outputs):
        for name in ("tool_call_id", "output"):
            if not isinstance(item.get(name), str):
                raise invalid(f"Missing required parameter: 'tool_outputs[{index}].{name}'.",
                              param=f"tool_outputs[{index}].{name}", code="missing_required_parameter")
        call_id = item["tool_call_id"]
        if call_id not in expected:
            raise invalid(f"Invalid 'tool_outputs[{index}].tool_call_id': no tool call '{call_id[:100]}' is "
                          f"awaiting output in this run.", param=f"tool_outputs[{index}].tool_call_id",
                          code="invalid_value")
        if call_id in given:
            raise invalid(f"Duplicate output for tool call '{call_id}'.", param=f"tool_outputs[{index}].tool_call_id",
                          code="invalid_value")
        given[call_id] = item["output"]
    missing = [call_id for call_id in expected if call_id not in given]
    if missing:
        raise invalid(f"Expected tool outputs for call_ids {expected}, got {list(given)}.", param="tool_outputs",
                      code="invalid_value")
    return given


def submit_tool_outputs(thread_id: str, run_id: str, body: dict) -> tuple[dict, list[tuple[str, dict]]]:
    """Record the outputs on the run's tool_calls step and queue the run again; the engine continues it.

    Returns the run and the events a streamed submission starts with.
    """
    with transaction.atomic():
        run = get_run(thread_id, run_id)
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status != "requires_action":
            raise invalid(f"Runs in status \"{run.status}\" do not accept tool outputs.", param="run_id")
        outputs = _check_tool_outputs(run, body["tool_outputs"])
        step = _pending_tool_step(run)
        details = step.step_details
        for call in details["tool_calls"]:
            call["function"]["output"] = outputs[call["id"]]
        step.step_details, step.status, step.completed_at = details, "completed", now()
        step.save(update_fields=["step_details", "status", "completed_at"])
        run.status, run.required_action = "queued", None
        run.save(update_fields=["status", "required_action"])
        engine.adopt_listener(run_id)
        transaction.on_commit(lambda: engine.submit(run_id, execute_run))
    run_data = serializers.run(run, thread_id)
    return run_data, [("thread.run.step.completed", serializers.run_step(step, run_id)),
                      ("thread.run.queued", run_data)]


def get_step(thread_id: str, run_id: str, step_id: str, search_content: bool = False) -> dict:
    check_id("thread", thread_id)
    check_id("run", run_id)
    check_id("run step", step_id)
    try:
        step = RunStep.objects.get(id=step_id, run__id=run_id, thread_id=thread_id)
    except RunStep.DoesNotExist:
        get_run(thread_id, run_id)
        raise not_found("run step", step_id) from None
    return serializers.run_step(step, run_id, search_content)


def list_steps(thread_id: str, run_id: str, query: QueryDict) -> dict:
    run = get_run(thread_id, run_id)
    content = bool(query.getlist("include[]"))  # check_include allows one value: the file_search results' content
    return page(RunStep.objects.filter(run=run), query, lambda s: serializers.run_step(s, run_id, content))
