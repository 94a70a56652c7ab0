"""Turns of a session over the channel layer: the user's message, a run, its streamed reply.

Every frame of a turn goes to the session's channel-layer group, so each
connection to the session, in any server process, receives the same stream.
A process answers a session's turns one at a time, in arrival order; another
process's run on the same thread is waited out, because the API refuses a
second active run (and new messages) on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import openai
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from betaassi_django.client import get_async_client
from betaassi_django.publishing.signals import session_group

logger = logging.getLogger("betaassi_django.sessions")

#: Turns a session may have waiting in one process before new ones are refused.
MAX_PENDING_TURNS = 16
#: Messages of history sent with ``session.ready``.
HISTORY_MESSAGES = 50
#: Deltas that arrive closer together than this are sent as one frame.
DELTA_COALESCE_SECONDS = 0.02
#: How long a turn waits for another process's run on the same thread.
BUSY_WAIT_SECONDS = 120.0

ACTIVE_RUN_STATUSES = {"queued", "in_progress", "requires_action", "cancelling"}
RUN_END_EVENTS = {"thread.run.failed", "thread.run.cancelled", "thread.run.expired", "thread.run.incomplete"}


def text_of(message) -> str:
    return "".join(part.text.value for part in message.content if part.type == "text")


def message_frame(message) -> dict:
    """A message as frames carry it."""
    return {"id": message.id, "role": message.role, "content": text_of(message),
            "created_at": message.created_at, "run_id": message.run_id}


def session_frame(session) -> dict:
    """A session as frames carry it (no owner details: the socket already knows its user)."""
    return {
        "assistant_id": session.assistant_id, "session_id": session.session_id, "kind": session.kind,
        "context_messages": session.context_messages, "model": session.model, "thread_id": session.thread_id,
        "created_at": int(session.created_at.timestamp()),
        "touched_at": int(session.touched_at.timestamp()) if session.touched_at else None,
    }


async def history(thread_id: str, limit: int = HISTORY_MESSAGES) -> list[dict]:
    """The thread's last ``limit`` messages, oldest first."""
    page = await get_async_client().beta.threads.messages.list(thread_id, order="desc", limit=limit)
    return [message_frame(m) for m in reversed(page.data)]


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


async def _latest_run_active(api: openai.AsyncOpenAI, thread_id: str) -> bool:
    runs = await api.beta.threads.runs.list(thread_id, limit=1)
    return bool(runs.data) and runs.data[0].status in ACTIVE_RUN_STATUSES


def _refused_for_active_run(exc: openai.BadRequestError) -> bool:
    """Whether the API refused because the thread has an active run (OpenAI's own wording, which the embedded
    API keeps), rather than for the request itself."""
    message = str(exc.message)
    return "already has an active run" in message or ("while a run" in message and "is active" in message)


async def _when_idle(api: openai.AsyncOpenAI, thread_id: str, call):
    """``call()``, retried while another run on the thread (another server process's turn) is active.

    A refusal for an active run is retried even when that run has ended by the time we look: it ended between
    the refusal and now, so the thread is free for the next attempt.
    """
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            return await call()
        except openai.BadRequestError as exc:
            busy = _refused_for_active_run(exc) or await _latest_run_active(api, thread_id)
            if time.monotonic() > deadline or not busy:
                raise
            await asyncio.sleep(0.05)


async def _our_message(api: openai.AsyncOpenAI, thread_id: str):
    """The turn's user message: the thread's newest user message, as none can be added while our run is active."""
    page = await api.beta.threads.messages.list(thread_id, order="desc", limit=5)
    return next(m for m in page.data if m.role == "user")


async def _stream_turn(api: openai.AsyncOpenAI, session, text: str, emit) -> None:
    manager = None

    async def open_stream():
        # The message goes in with the run (``additional_messages``), atomically: a turn of another
        # process cannot slip its message between ours and our run. Entering the SDK's stream manager
        # sends the request, so an active-run refusal surfaces here, with nothing added.
        nonlocal manager
        manager = api.beta.threads.runs.stream(
            **session.run_options(), additional_messages=[{"role": "user", "content": text}])
        return await manager.__aenter__()

    stream = await _when_idle(api, session.thread_id, open_stream)
    run_id, deltas = None, None
    try:
        while stream is not None:  # the run's stream, then one more per round of function calls
            current, stream = stream, None
            async for event in current:
                name = event.event
                if name == "thread.run.created":
                    run_id = event.data.id
                    deltas = _Deltas(emit, run_id)
                    message = await _our_message(api, session.thread_id)
                    await emit({"type": "message.created", "message": message_frame(message)})
                    await emit({"type": "run.started", "run_id": run_id})
                elif name == "thread.message.delta" and deltas is not None:
                    for part in event.data.delta.content or []:
                        if part.type == "text" and part.text and part.text.value:
                            await deltas.add(part.text.value)
                elif name == "thread.message.completed":
                    if deltas is not None:
                        await deltas.close()
                    await emit({"type": "message.completed", "run_id": run_id, "message": message_frame(event.data)})
                elif name in RUN_END_EVENTS:
                    if deltas is not None:
                        await deltas.close()
                    error = event.data.last_error.message if event.data.last_error else name.rsplit(".", 1)[-1]
                    await emit({"type": "run.failed", "run_id": run_id, "error": error})
                elif name == "thread.run.requires_action":
                    # The assistant's function tools run here; the run goes on in a new stream.
                    from betaassi_django.tools import outputs_for_run

                    outputs = await outputs_for_run(api, event.data)
                    await manager.__aexit__(None, None, None)
                    manager = api.beta.threads.runs.submit_tool_outputs_stream(
                        run_id=event.data.id, thread_id=session.thread_id, tool_outputs=outputs)
                    stream = await manager.__aenter__()
                    break
    finally:
        await manager.__aexit__(None, None, None)


async def run_turn(session, text: str, emit) -> None:
    """One turn in ``session`` (as the sender's connection knows it: ``session.updated`` keeps it current),
    reported through ``emit(frame)``; never raises (a failure is a ``run.failed`` frame)."""
    api = get_async_client()
    try:
        await _stream_turn(api, session, text, emit)
    except openai.APIError as exc:
        logger.warning("turn in %s/%s failed: %s", session.assistant_id, session.session_id, exc)
        await emit({"type": "run.failed", "run_id": None, "error": getattr(exc, "message", str(exc))})
    except Exception as exc:  # a bug must not take the session's queue down with it
        logger.exception("turn in %s/%s failed", session.assistant_id, session.session_id)
        await emit({"type": "run.failed", "run_id": None, "error": f"internal error ({type(exc).__name__})"})
    await database_sync_to_async(session.touch)()


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
        await layer.group_send(group, {"type": "session.frame", "frame": frame})

    try:
        while turns.pending:
            session, text, allowed = turns.pending.popleft()
            if allowed is not None and not await _still_allowed(allowed, session):
                continue
            await run_turn(session, text, emit)
    finally:
        if _sessions.get(group) is turns and not turns.pending:
            del _sessions[group]
