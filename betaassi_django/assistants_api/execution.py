"""Executing one run: queued -> in_progress -> completed | failed | cancelled.

Every state change is one database transaction followed by the stream events
OpenAI emits for it. A cancel request (from any process) is noticed between
deltas: at once through the engine's flag in this process, and through the
database at most ``CANCEL_POLL_SECONDS`` later otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.db import transaction

from . import serializers
from .engine import engine
from .ids import now
from .models import Message, Run, RunStep
from .responders import ContextMessage, Reply, ResponderRequest, get_responder

logger = logging.getLogger("betaassi_django.engine")
CANCEL_POLL_SECONDS = 0.25


class RunGone(Exception):
    """The run (or its thread) was deleted while executing."""


@dataclass
class Started:
    run: Run
    message: Message
    step: RunStep
    request: ResponderRequest
    events: list[tuple[str, dict]]


def _text_of(message: Message) -> str:
    return "\n".join(p["text"]["value"] for p in message.content if p.get("type") == "text")


def _context(run: Run) -> list[ContextMessage]:
    """The thread's messages the responder sees, after the truncation strategy."""
    messages = Message.objects.filter(thread_id=run.thread_id).order_by("-seq")
    strategy = run.truncation_strategy or {}
    if strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        messages = messages[: strategy["last_messages"]]
    return [ContextMessage(m.role, _text_of(m)) for m in reversed(list(messages))]


def _start(run_id: str) -> Started | Run | None:
    """queued -> in_progress with its step and empty reply message; or the run if it ended first."""
    with transaction.atomic():
        run = Run.objects.select_related("thread").filter(id=run_id).first()
        if run is None:
            return None
        if run.status == "cancelling":
            run.status, run.cancelled_at = "cancelled", now()
            run.save(update_fields=["status", "cancelled_at"])
            return run
        if run.status != "queued":
            return run
        run.status, run.started_at = "in_progress", now()
        run.save(update_fields=["status", "started_at"])
        thread_id = run.thread.id
        request = ResponderRequest(
            model=run.model,
            instructions="\n\n".join(filter(None, [run.instructions, run.additional_instructions])),
            messages=_context(run),
            temperature=run.temperature,
            top_p=run.top_p,
            tools=run.tools,
        )
        message = Message.objects.create(
            thread_id=run.thread_id,
            role="assistant",
            status="in_progress",
            content=[],
            assistant_id=run.assistant_id,
            run_id=run.id,
            attachments=[],
        )
        step = RunStep.objects.create(
            run=run,
            thread_id=thread_id,
            assistant_id=run.assistant_id,
            type="message_creation",
            status="in_progress",
            step_details={"type": "message_creation", "message_creation": {"message_id": message.id}},
        )
    run_data = serializers.run(run, thread_id)
    step_data = serializers.run_step(step, run.id)
    message_data = serializers.message(message, thread_id)
    events = [
        ("thread.run.in_progress", run_data),
        ("thread.run.step.created", step_data),
        ("thread.run.step.in_progress", step_data),
        ("thread.message.created", message_data),
        ("thread.message.in_progress", message_data),
    ]
    return Started(run, message, step, request, events)


def _status(run_id: str) -> str | None:
    return Run.objects.filter(id=run_id).values_list("status", flat=True).first()


def _finish(started: Started, text: str, reply: Reply, outcome: str, error: str = "") -> list[tuple[str, dict]]:
    """Write the run's end state; a run cancelled meanwhile ends cancelled."""
    run, message, step = started.run, started.message, started.step
    stamp = now()
    with transaction.atomic():
        current = Run.objects.select_for_update().filter(id=run.id).first()
        if current is None or not Message.objects.filter(pk=message.pk).exists():
            raise RunGone(run.id)
        if outcome == "completed" and current.status == "cancelling":
            outcome = "cancelled"
        content = (
            [{"type": "text", "text": {"value": text, "annotations": []}}] if text or outcome == "completed" else []
        )
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        message.content = content
        if outcome == "completed":
            message.status, message.completed_at = "completed", stamp
            step.status, step.completed_at, step.usage = "completed", stamp, usage
            current.status, current.completed_at, current.usage = "completed", stamp, usage
        elif outcome == "cancelled":
            message.status, message.incomplete_at = "incomplete", stamp
            message.incomplete_details = {"reason": "run_cancelled"}
            step.status, step.cancelled_at = "cancelled", stamp
            current.status, current.cancelled_at = "cancelled", stamp
        else:
            last_error = {"code": "server_error", "message": error or "The run failed."}
            message.status, message.incomplete_at = "incomplete", stamp
            message.incomplete_details = {"reason": "run_failed"}
            step.status, step.failed_at, step.last_error = "failed", stamp, last_error
            current.status, current.failed_at, current.last_error = "failed", stamp, last_error
        message.save()
        step.save()
        current.save()
    thread_id = run.thread.id
    message_data = serializers.message(message, thread_id)
    events = []
    if outcome == "completed":
        events.append(("thread.message.completed", message_data))
    else:
        events.append(("thread.message.incomplete", message_data))
    events.append((f"thread.run.step.{step.status}", serializers.run_step(step, run.id)))
    events.append((f"thread.run.{current.status}", serializers.run(current, thread_id)))
    return events


def _delta(message_id: str, index: int, text: str) -> dict:
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {"content": [{"index": index, "type": "text", "text": {"value": text, "annotations": []}}]},
    }


async def execute_run(run_id: str) -> None:
    """Move one run from queued to its end, publishing OpenAI's stream events."""
    try:
        await _execute(run_id)
    except RunGone:
        logger.info("run %s was deleted while executing", run_id)
        engine.publish(run_id, "error", _error(f"Run {run_id} was deleted while executing."))
    except Exception:
        logger.exception("run %s crashed", run_id)
        engine.publish(run_id, "error", _error(f"Run {run_id} stopped on a server error."))
    finally:
        engine.end(run_id)
        engine.forget(run_id)


def _error(message: str) -> dict:
    return {"message": message, "type": "server_error", "param": None, "code": None}


async def _execute(run_id: str) -> None:
    started = await database_sync_to_async(_start)(run_id)
    if started is None:
        return
    if isinstance(started, Run):
        if started.status == "cancelled":
            engine.publish(run_id, "thread.run.cancelled", serializers.run(started, started.thread.id))
        return
    for event, data in started.events:
        engine.publish(run_id, event, data)
    parts: list[str] = []
    reply = Reply()
    outcome, error = "completed", ""
    last_poll = time.monotonic()
    try:
        async for piece in get_responder().stream(started.request, reply):
            if engine.cancel_requested(run_id):
                outcome = "cancelled"
                break
            if time.monotonic() - last_poll > CANCEL_POLL_SECONDS:
                last_poll = time.monotonic()
                if await database_sync_to_async(_status)(run_id) == "cancelling":
                    outcome = "cancelled"
                    break
            parts.append(piece)
            engine.publish(run_id, "thread.message.delta", _delta(started.message.id, 0, piece))
    except Exception as exc:  # a responder failure ends the run, never the engine
        logger.warning("run %s failed: %s", run_id, exc)
        outcome, error = "failed", str(exc) or exc.__class__.__name__
    for event, data in await database_sync_to_async(_finish)(started, "".join(parts), reply, outcome, error):
        engine.publish(run_id, event, data)
