"""Executing one run: queued -> in_progress -> completed | failed | cancelled | requires_action.

Every state change is one database transaction followed by the stream events
OpenAI emits for it. The start and the reply message with its ``message_creation``
step are ``run_start``'s: the events announce the reply at the first text delta, as
OpenAI's do. Function calls of the model
end the execution in ``requires_action`` with a ``tool_calls`` step; submitting
their outputs queues the run again (``run_store.submit_tool_outputs``) and the next
execution sends the model the thread, then this run's text, calls and outputs.

A cancel request (from any process) is noticed at the next delta through the
engine's flag in this process, and within ``CANCEL_POLL_SECONDS`` in any case
(the database is polled while the responder streams or waits); the upstream
stream is closed then.

Nothing leaves a run stuck: an exception anywhere in its execution (a bug, a
database error, an unexpected responder error) ends it ``failed`` with
``server_error`` and its stream gets ``thread.run.failed``, then ``done``. A run
ended meanwhile by another process (``recovery``: its heartbeat looked stale, or
it expired) is noticed at the next poll or write; the execution then stops
writing and its stream gets the run's end event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
from collections.abc import Awaitable, Callable

from django.db import DatabaseError, transaction

from . import recovery, serializers
from .engine import engine
from .ids import now
from .knowledge import run_search
from .models import Message, Run, RunStep
from .responders import get_responder
from .responders.interface import Reply, ResponderError, ToolCall
from .run_start import WRITABLE, RunEnded, RunGone, Started, announce, check_writable, new_step, open_message, start

__all__ = ["RunEnded", "RunGone", "execute_run", "started_here"]

logger = logging.getLogger("betaassi_django.engine")
CANCEL_POLL_SECONDS = 0.25


#: ``created_at``: a reply written with the start takes the time its events announce it (``announce``).
MESSAGE_END_FIELDS = ["content", "status", "completed_at", "incomplete_at", "incomplete_details", "created_at"]
RUN_END_FIELDS = ["status", "required_action", "completed_at", "cancelled_at", "failed_at", "last_error", "usage",
                  "incomplete_details"]
STEP_END_FIELDS = ["status", "completed_at", "cancelled_at", "failed_at", "last_error", "usage", "created_at"]


def _status(run_id: str) -> str | None:
    return Run.objects.filter(id=run_id).values_list("status", flat=True).first()


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


def _finish(started: Started, text: str, reply: Reply, outcome: str,
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
                step.last_error = {"code": error[0] or "server_error", "message": error[1] or "The run failed."}
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


def _delta(message_id: str, index: int, text: str) -> dict:
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {"content": [{"index": index, "type": "text", "text": {"value": text, "annotations": []}}]},
    }


def _tool_calls_delta(step_id: str, calls: list[ToolCall]) -> dict:
    """The step's function calls as one ``thread.run.step.delta`` (what the SDK's tool-call callbacks read)."""
    tool_calls = [{"index": i, **_function_call(c)} for i, c in enumerate(calls)]
    return {"id": step_id, "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": tool_calls}}}


#: ``execute_run``'s ``started`` when the run is still to be started on the engine's database threads.
_NOT_STARTED = object()


def started_here(run_id: str, created: Run | None = None) -> Callable[[str], Awaitable[None]]:
    """Start a new run on this thread, now (``run_store`` calls it as the run's creation commits), and return
    what the engine executes: the run goes on from there.

    Why: started on the engine, a run waits for two thread hops (to the engine's loop, then to its database
    thread) before its start, and a hop back, all before the model is asked; the creating thread has its
    connection open and nothing else to do. A failure here is the execution's (it ends the run failed).
    ``created``: the run as its creation stored it (``run_start.start`` does not read it again).
    """
    try:
        started: object = start(run_id, created)
    except Exception as exc:  # raised again in the execution, which ends the run failed
        started = exc
    return functools.partial(execute_run, started=started)


async def execute_run(run_id: str, started: object = _NOT_STARTED) -> None:
    """Move one run from queued to its end (or to requires_action), publishing OpenAI's stream events;
    ``started``: what ``start`` returned (or raised) already, if it ran elsewhere."""
    ended = False
    try:
        ended = await _execute(run_id, started)
    except RunGone:
        logger.info("run %s was deleted while executing", run_id)
        engine.publish(run_id, "error", _error(f"Run {run_id} was deleted while executing."))
    except RunEnded as exc:
        logger.warning("run %s was ended elsewhere (%s) while executing here", run_id, exc.event)
        engine.publish(run_id, exc.event, exc.data)
        ended = True
    except Exception:
        logger.exception("run %s crashed", run_id)
        ended = await _fail(run_id)
    finally:
        # Once an end event was published, a client may already be streaming the run's next
        # execution (tool outputs submitted at once): its subscription must not be closed here.
        if not ended:
            engine.end(run_id)
        engine.forget(run_id)


def _error(message: str) -> dict:
    return {"message": message, "type": "server_error", "param": None, "code": None}


async def _fail(run_id: str) -> bool:
    """End a run whose execution raised: failed with server_error, and its stream's end event.

    When even that fails (the database is away), the stream gets an ``error`` event, and since this
    process stops stamping the run, a sweep ends it once it is stale.
    """
    try:
        run = await engine.db(recovery.end_run, run_id, recovery.FAILED)
    except Exception:
        logger.exception("run %s could not be ended; a sweep will end it", run_id)
        run = None
    if run is None:
        engine.publish(run_id, "error", _error(f"Run {run_id} stopped on a server error."))
        return False
    engine.publish(run_id, f"thread.run.{run.status}", serializers.run(run, run.thread.id))
    return True


async def _execute(run_id: str, started: object = _NOT_STARTED) -> bool:
    """Execute; True when an event that ends the run's stream was published."""
    if started is _NOT_STARTED:
        started = await engine.db(start, run_id)
    elif isinstance(started, Exception):
        raise started
    if started is None:
        return False
    if isinstance(started, Run):
        if started.status in ("cancelled", "failed", "expired"):  # cancelled before it started, or reaped
            engine.publish(run_id, f"thread.run.{started.status}", serializers.run(started, started.thread.id))
            return True
        return False
    for event, data in started.events:
        engine.publish(run_id, event, data)
    parts: list[str] = []
    reply = Reply()
    outcome, error = "completed", ("", "")
    consumer = asyncio.ensure_future(_consume(run_id, started, parts, reply))
    try:
        # Watch for a cancel while the responder streams, or waits (a model can take long to answer).
        while True:
            done, _ = await asyncio.wait({consumer}, timeout=CANCEL_POLL_SECONDS)
            if done:
                outcome = consumer.result()
                break
            status = await engine.db(_status, run_id)
            if status not in WRITABLE:  # deleted, or ended by another process: stop, write nothing
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError, RunGone, RunEnded):
                    await consumer
                await engine.db(check_writable, run_id)
            if engine.cancel_requested(run_id) or status == "cancelling":
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
                outcome = "cancelled"
                break
    except (RunGone, RunEnded):
        raise
    except ResponderError as exc:
        logger.warning("run %s failed: %s", run_id, exc.message)
        outcome, error = "failed", (exc.code, exc.message)
    except Exception as exc:  # a responder failure ends the run, never the engine
        logger.warning("run %s failed: %s", run_id, exc, exc_info=True)
        outcome, error = "failed", ("server_error", f"The responder failed on an unexpected error "
                                                    f"({exc.__class__.__name__}).")
    finally:
        if not consumer.done():
            consumer.cancel()
    if outcome == "completed" and reply.incomplete:  # a token limit: the run ends incomplete, its calls dropped
        outcome, started.incomplete = "incomplete", reply.incomplete
    elif outcome == "completed" and started.calls:
        outcome = "requires_action"
    for event, data in await engine.db(_finish, started, "".join(parts), reply, outcome, error):
        engine.publish(run_id, event, data)
    return True


async def _consume(run_id: str, started: Started, parts: list[str], reply: Reply) -> str:
    """Stream the responder's reply into the run's events; "cancelled" when a cancel arrived in this process."""
    if started.request.limit_reached:  # a token limit reached before the model is asked (run_options)
        reply.incomplete = started.request.limit_reached
        return "completed"
    async with contextlib.aclosing(run_search.stream(run_id, started, get_responder(), reply)) as stream:
        async for piece in stream:
            if engine.cancel_requested(run_id):
                return "cancelled"
            if isinstance(piece, ToolCall):
                started.calls.append(piece)
                continue
            if not started.opened:
                opened = announce(started) if started.message is not None else await engine.db(open_message, started)
                for event, data in opened:
                    engine.publish(run_id, event, data)
            parts.append(piece)
            engine.publish(run_id, "thread.message.delta", _delta(started.message.id, 0, piece))
    return "completed"
