"""Executing one run: queued -> in_progress -> completed | failed | cancelled | requires_action.

Every state change is one database transaction followed by the stream events
OpenAI emits for it. The start and the reply message with its ``message_creation``
step are ``run_start``'s: the events announce the reply at the first text delta, as
OpenAI's do; the end is ``run_end``'s. Function calls of the model
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
import functools
import logging
from collections.abc import Awaitable, Callable

from . import recovery, serializers
from .engine import engine
from .knowledge import run_search
from .models import Run
from .responders import get_responder
from .responders.interface import Reply, ResponderError, ToolCall
from .run_end import finish
from .run_start import WRITABLE, RunEnded, RunGone, Started, announce, check_writable, open_message, start

__all__ = ["RunEnded", "RunGone", "execute_run", "started_here"]

logger = logging.getLogger("betaassi_django.engine")
CANCEL_POLL_SECONDS = 0.25


def _status(run_id: str) -> str | None:
    return Run.objects.filter(id=run_id).values_list("status", flat=True).first()


def _delta(message_id: str, index: int, text: str) -> dict:
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {"content": [{"index": index, "type": "text", "text": {"value": text, "annotations": []}}]},
    }


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
    for event, data in await engine.db(finish, started, "".join(parts), reply, outcome, error):
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
