"""Writing the end of one run's execution: completed, incomplete, cancelled, failed or requires_action.

``execution`` drives a run while its responder streams; when the stream stops, ``finish`` writes the end
in one transaction on the engine's database thread and returns the stream events OpenAI emits for it. It is
the part of a run's life with the most rules (a run cancelled meanwhile ends cancelled, a reply never announced
is deleted when the run stops for its calls, a first execution ends its run in one conditional UPDATE, the
run's usage is the sum over its steps, the ``tool_calls`` step as OpenAI streams it), so it has its own module:
``execution`` keeps the polling, cancelling and failure handling around it.
"""

from __future__ import annotations

import copy

from django.db import DatabaseError, transaction

from . import serializers
from .ids import now
from .knowledge import run_search
from .models import Message, Run, RunStep
from .responders.interface import Reply, ToolCall
from .run_start import WRITABLE, RunEnded, RunGone, Started, announce, new_step, open_message

__all__ = ["MESSAGE_END_FIELDS", "RUN_END_FIELDS", "STEP_END_FIELDS", "finish"]

#: ``created_at``: a reply written with the start takes the time its events announce it (``announce``).
MESSAGE_END_FIELDS = ["content", "status", "completed_at", "incomplete_at", "incomplete_details", "created_at"]
RUN_END_FIELDS = ["status", "required_action", "completed_at", "cancelled_at", "failed_at", "last_error", "usage",
                  "incomplete_details"]
STEP_END_FIELDS = ["status", "completed_at", "cancelled_at", "failed_at", "last_error", "usage", "created_at"]
#: The codes a step's ``last_error`` may carry (the specification's ``RunStepObject``: no ``invalid_prompt``, which
#: only the run's may; the step then says ``server_error`` with the same message).
STEP_ERROR_CODES = ("server_error", "rate_limit_exceeded")


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _run_usage(run: Run) -> dict:
    """A run's usage: the sum over its steps (each execution's model call is recorded on its last step)."""
    totals = [0, 0]
    for usage in RunStep.objects.filter(run=run).exclude(usage=None).values_list("usage", flat=True):
        totals[0] += usage["prompt_tokens"]
        totals[1] += usage["completion_tokens"]
    return _usage(*totals)


def _function_call(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments, "output": None}}


def finish(started: Started, text: str, reply: Reply, outcome: str,
            error: tuple[str, str] = ("", "")) -> list[tuple[str, dict]]:
    """Write the execution's end state; a run cancelled meanwhile ends cancelled."""
    run, message, step = started.run, started.message, started.step
    stamp = now()
    thread_id = run.thread.id
    events: list[tuple[str, dict]] = []
    usage = _usage(reply.prompt_tokens, reply.completion_tokens)
    if outcome == "requires_action" and any(not c.name for c in started.calls):
        outcome, error = "failed", ("server_error", "The upstream model called a function without a name.")
    with transaction.atomic():
        current = _end_if_unchanged(started, outcome, error, stamp, usage) if message is not None else None
        claimed = current is not None
        if not claimed:
            current = Run.objects.select_for_update().select_related("thread").filter(id=run.id).first()
            if current is None:
                raise RunGone(run.id)
            if current.status not in WRITABLE:
                raise RunEnded(current)
            if outcome in ("completed", "requires_action", "incomplete") and current.status == "cancelling":
                outcome = "cancelled"
        if outcome != "requires_action" and not started.opened:
            # A run that ends here has its reply message (empty, or incomplete) and step, even without text.
            events += announce(started) if message is not None else open_message(started)
            message, step = started.message, started.step
        elif message is not None and not started.opened:
            # Written with the start, never announced: a run that stops for its calls without text has none.
            RunStep.objects.filter(pk=step.pk).delete()
            Message.objects.filter(pk=message.pk).delete()
            message = step = None
        if message is not None:
            keep = text or outcome == "completed"
            cited = run_search.annotations(text, started.citations)
            message.content = [{"type": "text", "text": {"value": text, "annotations": cited}}] if keep else []
            if outcome in ("completed", "requires_action"):
                message.status, message.completed_at = "completed", stamp
                step.status, step.completed_at = "completed", stamp
            elif outcome == "incomplete":  # a token limit (run_options): the message as OpenAI words it
                message.status, message.incomplete_at = "incomplete", stamp
                message.incomplete_details = {"reason": "max_tokens"}
                step.status, step.completed_at = "completed", stamp
            elif outcome == "cancelled":
                message.status, message.incomplete_at = "incomplete", stamp
                message.incomplete_details = {"reason": "run_cancelled"}
                step.status, step.cancelled_at = "cancelled", stamp
            else:
                message.status, message.incomplete_at = "incomplete", stamp
                message.incomplete_details = {"reason": "run_failed"}
                step.status, step.failed_at = "failed", stamp
                step.last_error = {"code": error[0] if error[0] in STEP_ERROR_CODES else "server_error",
                                   "message": error[1] or "The run failed."}
            if outcome != "requires_action":
                step.usage = usage
            try:  # only the fields an end changes; no row (the message was deleted) raises
                message.save(update_fields=MESSAGE_END_FIELDS)
                step.save(update_fields=STEP_END_FIELDS)
            except DatabaseError:
                if not Message.objects.filter(pk=message.pk).exists():
                    raise RunGone(run.id) from None
                raise
        if outcome == "requires_action":
            tool_step = new_step(run, "tool_calls", [_function_call(c) for c in started.calls], usage,
                                 carried_items=reply.carried_items or None)
        if not claimed:
            # The first execution's usage is its own step's (no earlier step has any).
            run_usage = usage if started.first and message is not None else None
            _end_state(current, started, outcome, error, stamp, run_usage)
            current.save(update_fields=RUN_END_FIELDS)  # Run.save adds heartbeat_at where it applies
    if message is not None:
        if message.content and message.content[0]["text"]["annotations"]:  # as OpenAI streams them: in a delta
            events.append(("thread.message.delta", run_search.annotations_delta(message)))
        message_event = "thread.message.completed" if message.status == "completed" else "thread.message.incomplete"
        events.append((message_event, serializers.message(message, thread_id)))
        events.append((f"thread.run.step.{step.status}", serializers.run_step(step, run.id)))
    if outcome == "requires_action":
        # As OpenAI streams it: the step starts with no calls, and a delta brings them.
        step_data = serializers.run_step(tool_step, run.id)
        step_data["step_details"] = {"type": "tool_calls", "tool_calls": []}
        events += [("thread.run.step.created", step_data), ("thread.run.step.in_progress", step_data),
                   ("thread.run.step.delta", _tool_calls_delta(tool_step.id, started.calls))]
    events.append((f"thread.run.{current.status}", serializers.run(current, thread_id)))
    return events


def _end_state(run: Run, started: Started, outcome: str, error: tuple[str, str], stamp: int,
               usage: dict | None) -> None:
    """Set the run's end fields (``RUN_END_FIELDS``) for ``outcome``; ``usage``: the run's when known, else the
    sum over its steps."""
    if outcome == "requires_action":
        run.status = "requires_action"
        run.required_action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in started.calls]}}
    elif outcome == "completed":
        run.status, run.completed_at = "completed", stamp
        run.usage = usage if usage is not None else _run_usage(run)
    elif outcome == "incomplete":
        run.status, run.incomplete_details = "incomplete", {"reason": started.incomplete}
        run.usage = usage if usage is not None else _run_usage(run)
    elif outcome == "cancelled":
        run.status, run.cancelled_at = "cancelled", stamp
    else:
        run.status, run.failed_at = "failed", stamp
        run.last_error = {"code": error[0] or "server_error", "message": error[1] or "The run failed."}


def _end_if_unchanged(started: Started, outcome: str, error: tuple[str, str], stamp: int, usage: dict) -> Run | None:
    """A first execution whose reply exists ends its run in one conditional UPDATE (no locked read first): the run
    as it ends, when it is still ``in_progress`` with the metadata read at its start (then the run read at the
    start, with the end's fields, is the run as stored); None otherwise (cancelling, ended elsewhere, gone, its
    metadata modified: the caller reads it under a lock)."""
    run = started.run
    if not started.first:
        return None
    ended = copy.copy(run)
    kept = not (outcome == "requires_action" and not started.opened)  # else the reply is deleted: no usage of its own
    _end_state(ended, started, outcome, error, stamp, usage if kept else None)
    values = {name: getattr(ended, name) for name in RUN_END_FIELDS}
    if not Run.objects.filter(id=run.id, status="in_progress", metadata=run.metadata).update(**values):
        return None
    return ended


def _tool_calls_delta(step_id: str, calls: list[ToolCall]) -> dict:
    """The step's function calls as one ``thread.run.step.delta`` (what the SDK's tool-call callbacks read)."""
    tool_calls = [{"index": i, **_function_call(c)} for i, c in enumerate(calls)]
    return {"id": step_id, "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": tool_calls}}}
