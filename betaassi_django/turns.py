"""A session's turns: the user's message, a run, the function-tool rounds, the reply. One home for all three ways in.

- ``ask(session, text)`` (``Session.ask``): sync, returns the whole reply as the run ends;
- ``astream(session, text)`` (``Session.astream``): async, yields the reply's text deltas;
- ``submit(session, text)`` (the WebSocket consumer): queues a turn whose frames go to every connection to the
  session (``groups.fan_out``: this process's directly, other processes' through the channel layer), so each
  receives the same stream (the contract: docs/websocket.md).

All three send the message with the run (``run_stream.run_request``), count the turn against the same limits
(``quotas``: ``ask`` and ``astream`` here, a WebSocket turn in the consumer as it admits the frame, with the access
check in one database trip) and run the assistant's function tools between rounds (``run_stream``); the two async
ones share one stream of run events across tool rounds (``run_stream.turn_events``). A process answers a
session's WebSocket turns one at a time, in arrival order; another process's run on the same thread is waited
out, because the API refuses a second active run (and new messages) on a thread. ``ask`` and ``astream`` do not
wait: they get the API's 400.

The session is anything with the ``Session`` row's attributes (``assistant_id``, ``session_id``, ``thread_id``,
``owner_id``, ``run_options()``, ``touch()``): this module sits below the publish queue that owns that table,
and imports only ``run_stream``, the clients, the quotas, what frames carry (``frames``), the database work off
the event loop (``ws_database``: its threads, the session touches) and the low helpers (group names, message text).
"""


from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import openai
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from betaassi_django import quotas, run_stream
from betaassi_django.client import get_async_client, get_client
from betaassi_django.frames import cited_frame, message_frame
from betaassi_django.groups import fan_out, session_group
from betaassi_django.messages import text_of_all
from betaassi_django.ws_database import touch_due, touch_soon

logger = logging.getLogger("betaassi_django.sessions")

#: Turns a session may have waiting in one process before new ones are refused.
MAX_PENDING_TURNS = 16
#: Deltas that arrive closer together than this are sent as one frame.
DELTA_COALESCE_SECONDS = 0.02

RUN_END_EVENTS = {f"thread.run.{status}" for status in run_stream.FAILED_RUN_STATUSES}


# -- one turn ----------------------------------------------------------------------------------------------


class _Deltas:
    """Coalesces bursts of text deltas, so a fast stream does not become thousands of frames."""

    def __init__(self, emit, run_id: str) -> None:
        self.emit, self.run_id = emit, run_id
        self.buffer: list[str] = []
        self.last_sent = 0.0
        self.timer: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    async def add(self, text: str) -> None:
        self.buffer.append(text)
        if time.monotonic() - self.last_sent >= DELTA_COALESCE_SECONDS:
            await self.flush()
        elif self.timer is None:
            self.timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(DELTA_COALESCE_SECONDS)
        self.timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            if self.buffer:
                text, self.buffer = "".join(self.buffer), []
                self.last_sent = time.monotonic()
                await self.emit({"type": "message.delta", "run_id": self.run_id, "delta": text})

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        await self.flush()


async def _our_message(api: openai.AsyncOpenAI, thread_id: str):
    """The turn's user message: the thread's newest user message, as none can be added while our run is active."""
    page = await api.beta.threads.messages.list(thread_id, order="desc", limit=5)
    return next(m for m in page.data if m.role == "user")


# -- what every turn does -------------------------------------------------------------------------------------

def _counted_user(session, user) -> int | None:
    """Whose turn it is for the quotas: ``user`` (a user or a pk) when given, else the session's owner."""
    return getattr(user, "pk", user) if user is not None else session.owner_id


# -- the Python API: Session.ask and Session.astream ----------------------------------------------------------


def ask(session, text: str, *, user=None) -> str:
    """Send ``text`` in ``session`` and return the assistant's whole reply (``Session.ask``).

    The turn counts against ``user`` (default: the owner); over ``BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE`` it
    raises ``quotas.QuotaExceeded`` before any backend call, and ``quotas.ModelNotAllowed`` when the session's
    model is no longer on its assistant class's allow-list. A run that does not complete raises RuntimeError.
    It returns as the run ends: the reply is the text of the run's messages, in order, as they completed.
    """
    quotas.check_turn(session, _counted_user(session, user))
    api = get_client()
    run, messages = run_stream.run_to_end(api, session, text)
    if touch_due(session):
        session.touch()
    if run is None or run.status != "completed":
        raise _not_completed(run)
    return text_of_all(messages)


def _not_completed(run, error: str = "", run_id: str = "") -> RuntimeError:
    """What ``ask`` and ``astream`` raise for a run that did not complete (None: no end event came; ``run_id``
    then names it when it was created)."""
    status = run.status if run is not None else "without an end event"
    if run is not None and (run.last_error or run.incomplete_details):
        error = _ended_why(run)
    return RuntimeError(f"run {run.id if run else run_id} ended {status}: {error}")


def _stream_error(event) -> str:
    """The message of a stream's ``error`` event: in ``data`` (the engine's dict); the SDK, which types no
    ``error`` event (its data is an ``Error``), leaves the fields on an event named None."""
    source = event.data if event.event == "error" else event
    message = source.get("message") if isinstance(source, dict) else getattr(source, "message", None)
    return message if isinstance(message, str) and message else "the run's stream reported an error"


async def astream(session, text: str, *, user=None) -> AsyncIterator[str]:
    """Send ``text`` in ``session`` and yield the reply's text deltas as they arrive (``Session.astream``; the
    turn counts against ``user``, default the owner, as in ``ask``). A run that does not complete raises
    RuntimeError, as ``ask`` does, after the text it streamed."""
    check = functools.partial(quotas.check_turn, session, _counted_user(session, user))
    api = get_async_client()
    run, error, run_id = None, "", ""
    async with contextlib.aclosing(run_stream.turn_events(api, session, text, wait_while_busy=False,
                                                          check=check)) as events:
        async for event in events:
            if event.event == "thread.message.delta":
                for piece in run_stream.text_deltas(event):
                    yield piece
            elif event.event == "thread.run.created":
                run_id = event.data.id
            elif event.event in RUN_END_EVENTS or event.event == "thread.run.completed":
                run = event.data
            elif event.event in ("error", None):
                error = _stream_error(event)
    if touch_due(session):
        await sync_to_async(session.touch)()
    if run is None or run.status != "completed":
        raise _not_completed(run, error, run_id)


# -- a WebSocket turn -----------------------------------------------------------------------------------------


def _ended_why(run) -> str:
    """Why a run ended without completing: its last_error's message; the token limit an ``incomplete`` run
    reached (``max_prompt_tokens`` / ``max_completion_tokens``); else its status."""
    if run.last_error:
        return run.last_error.message
    reason = getattr(run.incomplete_details, "reason", None)
    return f"The reply reached the run's {reason} limit." if reason else run.status


def _run_failed(run) -> dict:
    """The ``run.failed`` frame of a run that ended without completing (``status``: how it ended)."""
    return {"type": "run.failed", "run_id": run.id, "error": _ended_why(run), "status": run.status}


async def _stream_turn(api: openai.AsyncOpenAI, session, text: str, emit, turn: dict) -> None:
    """The turn's frames from its run's events; a stream that stops before the run's end (an ``error`` event: the
    run or its thread was deleted meanwhile, the server failed) still ends the turn, with ``run.failed``."""
    deltas, ended = None, False

    async def report(call, ok: bool | None) -> None:  # a function tool starts (ok None) or ends
        if deltas is not None:
            await deltas.flush()  # the text before the call is shown before it
        frame = {"type": "tool.started" if ok is None else "tool.completed", "run_id": turn["run_id"],
                 "call_id": call.id, "name": call.function.name}
        await emit(frame if ok is None else {**frame, "ok": ok})

    async with contextlib.aclosing(run_stream.turn_events(api, session, text, wait_while_busy=True,
                                                          report=report)) as events:
        async for event in events:
            name = event.event
            if name == "thread.run.created":
                run_id = turn["run_id"] = event.data.id
                deltas = _Deltas(emit, run_id)
                message = getattr(event, "user_message", None) or await _our_message(api, session.thread_id)
                await emit({"type": "message.created", "message": message_frame(message)})
                await emit({"type": "run.started", "run_id": run_id})
            elif name == "thread.message.delta" and deltas is not None:
                for piece in run_stream.text_deltas(event):
                    await deltas.add(piece)
            elif name == "thread.message.completed":
                if deltas is not None:
                    await deltas.close()
                await emit({"type": "message.completed", "run_id": turn["run_id"],
                            "message": await cited_frame(api, session.thread_id, event.data)})
            elif name in RUN_END_EVENTS:
                if deltas is not None:
                    await deltas.close()
                await emit(_run_failed(event.data))
                ended = True
            elif name == "thread.run.completed":
                ended = True
            elif name in ("error", None):
                if deltas is not None:
                    await deltas.close()
                await emit({"type": "run.failed", "run_id": turn["run_id"], "error": _stream_error(event),
                            "status": None})
                return
    if not ended:  # the stream ended early without saying why: the client must not wait for an end
        run = await _ended(api, session, turn["run_id"])
        await emit(_run_failed(run) if run is not None else {
            "type": "run.failed", "run_id": turn["run_id"], "status": None,
            "error": "the run's events stopped before it ended; its reply, if any, shows in the history"})


async def _ended(api: openai.AsyncOpenAI, session, run_id: str | None):
    """The turn's run when the API refused a step of it because it had ended (cancelled while its function
    tools ran: the tool outputs are refused), else None."""
    if run_id is None:
        return None
    with contextlib.suppress(openai.APIError):
        run = await api.beta.threads.runs.retrieve(run_id, thread_id=session.thread_id)
        if run.status in run_stream.FAILED_RUN_STATUSES:
            return run
    return None


async def run_turn(session, text: str, emit) -> None:
    """One turn in ``session`` (as the sender's connection knows it: ``session.updated`` keeps it current),
    reported through ``emit(frame)``; never raises (a failure is a ``run.failed`` frame)."""
    api = get_async_client()
    turn: dict = {"run_id": None}
    try:
        await _stream_turn(api, session, text, emit, turn)
    except openai.APIError as exc:
        ended = await _ended(api, session, turn["run_id"])
        if ended is not None:
            await emit(_run_failed(ended))
        else:
            logger.warning("turn in %s/%s failed: %s", session.assistant_id, session.session_id, exc)
            await emit({"type": "run.failed", "run_id": None, "error": getattr(exc, "message", str(exc)),
                        "status": None})
    except Exception as exc:  # a bug must not take the session's queue down with it
        logger.exception("turn in %s/%s failed", session.assistant_id, session.session_id)
        await emit({"type": "run.failed", "run_id": None, "error": f"internal error ({type(exc).__name__})",
                    "status": None})
    touch_soon(session)


async def cancel(session, run_id: str | None = None) -> bool:
    """Cancel the session's active run (a ``run.cancel``), whichever connection or process started it: False
    when none is active, or ``run_id`` is not that run. The run's own stream then ends it ``cancelled``."""
    try:
        return await run_stream.cancel_active_run(get_async_client(), session.thread_id, run_id)
    except openai.NotFoundError:  # the thread is gone: nothing can be running in it
        return False


# -- the session's turns in this process --------------------------------------------------------------------


@dataclass
class _Turns:
    loop: asyncio.AbstractEventLoop
    pending: deque = field(default_factory=deque)
    task: asyncio.Task | None = None


_sessions: dict[str, _Turns] = {}


def submit(session, text: str, allowed: Callable[[], Awaitable[bool]] | None = None) -> bool:
    """Queue a turn; False when the session already has ``MAX_PENDING_TURNS`` waiting here. ``allowed()`` is
    asked again just before a turn that waited behind others runs: a sender logged out or refused meanwhile has
    no turn run (a turn that starts at once was checked as it arrived)."""
    group = session_group(session.assistant_id, session.session_id)
    loop = asyncio.get_running_loop()
    turns = _sessions.get(group)
    if turns is None or turns.loop is not loop:
        turns = _sessions[group] = _Turns(loop)
    if len(turns.pending) >= MAX_PENDING_TURNS:
        return False
    starts_now = not turns.pending and (turns.task is None or turns.task.done())
    turns.pending.append((session, text, None if starts_now else allowed))
    if turns.task is None or turns.task.done():
        turns.task = loop.create_task(_work(group, turns))
    return True


async def _still_allowed(allowed: Callable[[], Awaitable[bool]], session) -> bool:
    try:
        return await allowed()
    except Exception:  # a fault of the check refuses the turn, and leaves the queue working
        logger.exception("the sender check of a turn in %s/%s failed", session.assistant_id, session.session_id)
        return False


async def _work(group: str, turns: _Turns) -> None:
    layer = get_channel_layer()

    async def emit(frame: dict) -> None:
        await fan_out(group, layer, frame)

    try:
        while turns.pending:
            session, text, allowed = turns.pending.popleft()
            if allowed is not None and not await _still_allowed(allowed, session):
                continue
            await run_turn(session, text, emit)
    finally:
        if _sessions.get(group) is turns and not turns.pending:
            del _sessions[group]
