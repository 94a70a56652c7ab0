"""Synchronous store operations behind the /v1 views.

Views validate bodies against the specification, then call these through
``sync_to_async`` so each operation is one short database transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.http import QueryDict

from betaassi_django import conf

from . import recovery, serializers
from .engine import engine
from .errors import invalid, not_found
from .execution import execute_run
from .ids import now
from .limits import plausible_id
from .models import ACTIVE_RUN_STATUSES, Assistant, Message, Run, RunStep, Thread
from .pagination import page

ASSISTANT_FIELDS = (
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
)
INCLUDE_VALUES = ("step_details.tool_calls[*].file_search.results[*].content",)


def _tool_resources(value: dict | None, param: str) -> dict | None:
    """Keep the stored shape of the specification; vector store creation is not offered."""
    if value is None:
        return None
    search = value.get("file_search")
    if isinstance(search, dict) and "vector_stores" in search:
        raise invalid(
            "Creating vector stores inline is not supported by the embedded API; pass 'vector_store_ids' instead.",
            param=f"{param}.file_search.vector_stores",
            code="unsupported_parameter",
        )
    return value


# Assistants ---------------------------------------------------------------


def _check_id(kind: str, object_id: str) -> None:
    """An id that no object can have is not found without a query (it may hold anything: NUL, 100 kB...)."""
    if not plausible_id(object_id):
        raise not_found(kind, object_id)


def _get(model: type[Assistant] | type[Thread], kind: str, object_id: str) -> Assistant | Thread:
    """An assistant or a thread by id (they stand alone), or a 404."""
    _check_id(kind, object_id)
    try:
        return model.objects.get(id=object_id)
    except model.DoesNotExist:
        raise not_found(kind, object_id) from None


def _delete(model: type[Assistant] | type[Thread], kind: str, object_id: str) -> dict:
    """Delete an assistant or a thread (with what the database cascades to), or a 404."""
    _check_id(kind, object_id)
    deleted, _ = model.objects.filter(id=object_id).delete()
    if not deleted:
        raise not_found(kind, object_id)
    return serializers.deleted(kind, object_id)


def get_assistant(assistant_id: str) -> Assistant:
    return _get(Assistant, "assistant", assistant_id)


def create_assistant(body: dict) -> dict:
    values = {k: body[k] for k in ASSISTANT_FIELDS if k in body}
    values["tool_resources"] = _tool_resources(values.get("tool_resources"), "tool_resources")
    values.setdefault("tools", [])
    values["metadata"] = values.get("metadata") or {}
    values.setdefault("temperature", 1.0)
    values.setdefault("top_p", 1.0)
    values.setdefault("response_format", "auto")
    return serializers.assistant(Assistant.objects.create(**values))


def modify_assistant(assistant_id: str, body: dict) -> dict:
    with transaction.atomic():
        assistant = get_assistant(assistant_id)
        for field in ASSISTANT_FIELDS:
            if field in body:
                value = body[field]
                if field == "tool_resources":
                    value = _tool_resources(value, field)
                elif field in ("metadata", "tools"):
                    value = value or ({} if field == "metadata" else [])
                setattr(assistant, field, value)
        assistant.save()
    return serializers.assistant(assistant)


def delete_assistant(assistant_id: str) -> dict:
    return _delete(Assistant, "assistant", assistant_id)


def list_assistants(query: QueryDict, only: frozenset[str] | None = None) -> dict:
    """``only``: the assistant ids a limited API key reaches (None: every assistant)."""
    assistants = Assistant.objects.all() if only is None else Assistant.objects.filter(id__in=only)
    return page(assistants, query, serializers.assistant)


# Threads and messages ------------------------------------------------------


def get_thread(thread_id: str) -> Thread:
    return _get(Thread, "thread", thread_id)


def message_content(content: str | list) -> list:
    """Request content (a string or parts) -> stored content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
        else:
            parts.append(part)
    return parts


def _new_message(thread: Thread, body: dict) -> Message:
    return Message(
        thread=thread,
        role=body["role"],
        content=message_content(body["content"]),
        attachments=body.get("attachments") or [],
        metadata=body.get("metadata") or {},
        status="completed",
    )


def _insert_thread(body: dict) -> Thread:
    thread = Thread.objects.create(
        metadata=body.get("metadata") or {},
        tool_resources=_tool_resources(body.get("tool_resources"), "tool_resources"),
    )
    Message.objects.bulk_create([_new_message(thread, m) for m in body.get("messages") or []])
    return thread


def create_thread(body: dict) -> dict:
    with transaction.atomic():
        return serializers.thread(_insert_thread(body))


def modify_thread(thread_id: str, body: dict) -> dict:
    with transaction.atomic():
        thread = get_thread(thread_id)
        if "metadata" in body:
            thread.metadata = body["metadata"] or {}
        if "tool_resources" in body:
            thread.tool_resources = _tool_resources(body["tool_resources"], "tool_resources")
        thread.save()
    return serializers.thread(thread)


def delete_thread(thread_id: str) -> dict:
    return _delete(Thread, "thread", thread_id)


def _active_run(thread: Thread) -> Run | None:
    """The thread's active run; one whose time ran out is expired on the way, and one whose process died (no
    heartbeat) is ended now, freeing the thread (only looked for when there is an active run: one query in the
    common case)."""
    active = Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).only("id", "status", "expires_at")
    runs = list(active)
    if runs:
        recovery.reap_thread(thread.pk)
        runs = list(active.all())
    for run in runs:
        if run.expires_at is not None and run.expires_at < now():
            Run.objects.filter(pk=run.pk, status=run.status).update(status="expired")
            continue
        return run
    return None


def create_message(thread_id: str, body: dict) -> dict:
    with transaction.atomic():
        thread = get_thread(thread_id)
        active = _active_run(thread)
        if active is not None:
            raise invalid(f"Can't add messages to {thread_id} while a run {active.id} is active.")
        message = _new_message(thread, body)
        message.save()
    return serializers.message(message, thread_id)


def get_message(thread_id: str, message_id: str) -> Message:
    _check_id("thread", thread_id)
    _check_id("message", message_id)
    try:
        return Message.objects.get(id=message_id, thread__id=thread_id)
    except Message.DoesNotExist:
        get_thread(thread_id)
        raise not_found("message", message_id) from None


def retrieve_message(thread_id: str, message_id: str) -> dict:
    return serializers.message(get_message(thread_id, message_id), thread_id)


def _modify_metadata(get: Callable[[str, str], Message | Run], serialize: Callable[[Message | Run, str], dict],
                     thread_id: str, object_id: str, body: dict) -> dict:
    """Modify a message or a run: the specification lets a client change only their metadata."""
    with transaction.atomic():
        row = get(thread_id, object_id)
        if "metadata" in body:
            row.metadata = body["metadata"] or {}
            row.save(update_fields=["metadata"])
    return serialize(row, thread_id)


def modify_message(thread_id: str, message_id: str, body: dict) -> dict:
    return _modify_metadata(get_message, serializers.message, thread_id, message_id, body)


def delete_message(thread_id: str, message_id: str) -> dict:
    with transaction.atomic():
        get_message(thread_id, message_id).delete()
    return serializers.deleted("thread.message", message_id)


def list_messages(thread_id: str, query: QueryDict) -> dict:
    thread = get_thread(thread_id)
    messages = Message.objects.filter(thread=thread)
    if query.get("run_id"):
        run_id = query["run_id"]
        messages = messages.filter(run_id=run_id) if plausible_id(run_id) else messages.none()
    return page(messages, query, lambda m: serializers.message(m, thread_id))


# Runs and steps -----------------------------------------------------------


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


def _insert_run(run_id: str, thread: Thread, body: dict) -> Run:
    _check_truncation(body)
    assistant = get_assistant(body["assistant_id"])
    active = _active_run(thread)
    if active is not None:
        raise invalid(f"Thread {thread.id} already has an active run {active.id}.")
    added = Message.objects.bulk_create([_new_message(thread, m) for m in body.get("additional_messages") or []])
    run = _new_run(run_id, thread, assistant, body)
    try:
        with transaction.atomic():
            run.save(force_insert=True)
    except IntegrityError:
        # Another process started a run between our check and our insert.
        raise invalid(f"Thread {thread.id} already has an active run.") from None
    # An in-process turn's queue (engine.listening), before the run can start; with the messages added with
    # the run, which the turn shows its user (rather than listing the thread for them).
    engine.adopt_listener(run_id, [serializers.message(m, thread.id) for m in added])
    transaction.on_commit(lambda: engine.submit(run_id, execute_run))
    return run


def create_run(thread_id: str, run_id: str, body: dict) -> dict:
    with transaction.atomic():
        thread = get_thread(thread_id)
        return serializers.run(_insert_run(run_id, thread, body), thread_id)


def create_thread_and_run(run_id: str, body: dict) -> tuple[dict, dict]:
    thread_body = body.get("thread") or {}
    if body.get("tool_resources") is not None:
        thread_body = {**thread_body, "tool_resources": body["tool_resources"]}
    with transaction.atomic():
        get_assistant(body["assistant_id"])
        thread = _insert_thread(thread_body)
        run = _insert_run(run_id, thread, {k: v for k, v in body.items() if k not in ("thread", "tool_resources")})
        return serializers.thread(thread), serializers.run(run, thread.id)


def get_run(thread_id: str, run_id: str) -> Run:
    _check_id("thread", thread_id)
    _check_id("run", run_id)
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
    return _modify_metadata(get_run, serializers.run, thread_id, run_id, body)


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


def get_step(thread_id: str, run_id: str, step_id: str) -> dict:
    _check_id("thread", thread_id)
    _check_id("run", run_id)
    _check_id("run step", step_id)
    try:
        step = RunStep.objects.get(id=step_id, run__id=run_id, thread_id=thread_id)
    except RunStep.DoesNotExist:
        get_run(thread_id, run_id)
        raise not_found("run step", step_id) from None
    return serializers.run_step(step, run_id)


def list_steps(thread_id: str, run_id: str, query: QueryDict) -> dict:
    run = get_run(thread_id, run_id)
    return page(RunStep.objects.filter(run=run), query, lambda s: serializers.run_step(s, run_id))
