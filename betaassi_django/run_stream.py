"""A turn's run and its events, from the source that costs least: the engine of this process or the SDK's stream.

With the embedded backend in this process (``client.in_process``) the run is created through the SDK as always,
but its events come from the engine's queue (``client.run_events``), not as server-sent events that the API
encodes and the SDK parses again in the same process (about 22 ms of CPU for 40 deltas). Against a remote
backend the SDK's stream helpers carry them. Either way a function-call round runs the assistant's tools here
and the run goes on; the turn sees one stream of events (``turn_events``) or, from sync code, the run's end and
its completed messages (``run_to_end``). ``turns`` builds ``ask``, ``astream`` and the WebSocket turns on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import openai
from asgiref.sync import sync_to_async
from openai.types.beta.threads import Message, Run

from betaassi_django.client import (
    acreate_run_here,
    calls_store_directly,
    create_run_here,
    in_process,
    run_events,
    stop_run_events,
)
from betaassi_django.tools import ToolReport, outputs_for_run, outputs_for_run_sync

#: How long a turn waits for another process's run on the same thread.
BUSY_WAIT_SECONDS = 120.0

ACTIVE_RUN_STATUSES = {"queued", "in_progress", "requires_action", "cancelling"}
#: How a run ends when it does not complete.
FAILED_RUN_STATUSES = ("failed", "cancelled", "expired", "incomplete")
#: How often a turn whose function tools run looks whether its run ended meanwhile (a ``run.cancel``).
TOOL_WATCH_SECONDS = 0.25


async def latest_run_active(api: openai.AsyncOpenAI, thread_id: str) -> bool:
    runs = await api.beta.threads.runs.list(thread_id, limit=1)
    return bool(runs.data) and runs.data[0].status in ACTIVE_RUN_STATUSES


async def cancel_active_run(api: openai.AsyncOpenAI, thread_id: str, run_id: str | None = None) -> bool:
    """Cancel the thread's active run (when ``run_id`` is given, only if it is that run): False when none is.

    The active run is the thread's newest (the API refuses a second), so it is found from the thread whichever
    connection or process started it, and a run id of another thread is never cancelled. A run already
    ``cancelling`` is left as it is; one that ended between the look and the cancel (the API's 400) counts as
    none.
    """
    runs = await api.beta.threads.runs.list(thread_id, limit=1)
    run = runs.data[0] if runs.data else None
    if run is None or run.status not in ACTIVE_RUN_STATUSES or run_id not in (None, run.id):
        return False
    if run.status == "cancelling":
        return True
    try:
        await api.beta.threads.runs.cancel(run.id, thread_id=thread_id)
    except openai.BadRequestError:
        return (await api.beta.threads.runs.retrieve(run.id, thread_id=thread_id)).status == "cancelling"
    return True


def refused_for_active_run(exc: openai.BadRequestError) -> bool:
    """Whether the API refused because the thread has an active run (OpenAI's own wording, which the embedded
    API keeps), rather than for the request itself."""
    message = str(exc.message)
    return "already has an active run" in message or ("while a run" in message and "is active" in message)


async def when_idle(api: openai.AsyncOpenAI, thread_id: str, call):
    """``call()``, retried while another run on the thread (another server process's turn) is active.

    A refusal for an active run is retried even when that run has ended by the time we look: it ended between
    the refusal and now, so the thread is free for the next attempt.
    """
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            return await call()
        except openai.BadRequestError as exc:
            busy = refused_for_active_run(exc) or await latest_run_active(api, thread_id)
            if time.monotonic() > deadline or not busy:
                raise
            await asyncio.sleep(0.05)


def run_request(session, text: str) -> dict:
    """A turn's run with its user message: the message goes in with the run (``additional_messages``),
    atomically, so a turn of this or another process cannot slip its message between ours and our run."""
    return {**session.run_options(), "additional_messages": [{"role": "user", "content": text}]}


def text_deltas(event) -> list[str]:
    """The text pieces of a ``thread.message.delta`` event (as the SDK's ``text_deltas`` reads them), typed
    by the SDK or the engine's dict (``Event``)."""
    if isinstance(event.data, dict):
        return [part["text"]["value"] for part in event.data["delta"].get("content") or []
                if part.get("type") == "text" and part.get("text") and part["text"].get("value")]
    return [part.text.value for part in event.data.delta.content or []
            if part.type == "text" and part.text and part.text.value]


_UNSET = object()


def _typed(event: str, data: dict):
    """The SDK's model of an event's object where a turn reads it as one (runs, completed messages), else the
    engine's dict."""
    if event.startswith("thread.run.") and not event.startswith("thread.run.step."):
        return Run.construct(**data)
    if event in ("thread.message.completed", "thread.message.incomplete"):
        return Message.construct(**data)
    return data


class Event:
    """A run event handed over by the run engine of this process (``_engine_events``): ``data`` is typed as the
    SDK types it where a turn reads the object (runs, completed messages), and the engine's dict otherwise
    (the deltas, most of a stream, are read raw). The model is built when ``data`` is first read: ``astream``
    reads none of a run's objects, so building them (a recursive ``construct`` each) was CPU for nothing."""

    __slots__ = ("_data", "_raw", "event", "user_message")

    def __init__(self, event: str, data, user_message=None) -> None:
        #: On ``thread.run.created``: the turn's user message, as the store created it with the run.
        self.event, self._data, self._raw, self.user_message = event, data, None, user_message

    @classmethod
    def raw(cls, event: str, data: dict) -> Event:
        """The engine's ``(event, data)`` pair, its object typed on first read."""
        made = cls(event, _UNSET)
        made._raw = data
        return made

    @property
    def data(self):
        if self._data is _UNSET:
            self._data = _typed(self.event, self._raw)
        return self._data


async def _outputs_unless_ended(api: openai.AsyncOpenAI, thread_id: str, run: Run,
                                report: ToolReport | None) -> tuple[list[dict] | None, Run | None]:
    """``(outputs, None)`` for the run's function calls, or ``(None, run)`` when the run ends while they run
    (cancelled: nothing waits for their outputs any more). The functions still running are then cancelled (an
    async one at its next ``await``; a sync one's thread runs on, its result dropped). The run is looked at every
    ``TOOL_WATCH_SECONDS`` only while functions run, so a turn without function calls pays nothing."""
    calls = asyncio.ensure_future(outputs_for_run(api, run, report))
    try:
        while not (await asyncio.wait({calls}, timeout=TOOL_WATCH_SECONDS))[0]:
            now = await api.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
            if now.status in FAILED_RUN_STATUSES:
                return None, now
        return calls.result(), None
    finally:
        if not calls.done():
            calls.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await calls  # their tool.completed frames go out before the run's end


async def _engine_events(api: openai.AsyncOpenAI, session, text: str, *, wait_while_busy: bool,
                         check=None, report: ToolReport | None = None) -> AsyncIterator:
    """``turn_events`` for the embedded backend in this process: the run is created (and continued after its
    function calls) through the SDK as always, but its events come from the engine's queue (``run_events``),
    not as server-sent events encoded by the API and parsed again by the SDK in the same process."""
    events = None

    async def start(call):
        nonlocal events
        with run_events() as listener:
            try:
                run = await call()
            except BaseException:
                stop_run_events(listener)
                raise
        if listener.run_id != run.id:  # not reached through the in-process transport after all
            stop_run_events(listener)
            raise RuntimeError(f"run {run.id} was not created in this process")
        events = listener
        return run

    async def create():
        nonlocal check
        if calls_store_directly(api):
            params = run_request(session, text)
            created = await acreate_run_here(params.pop("thread_id"), params, check)
            check = None  # checked (once, even when the request below follows)
            if created is not None:
                return Run.construct(**created)
        if check is not None:
            await sync_to_async(check)()
            check = None
        return await api.beta.threads.runs.create(**run_request(session, text))

    run = await (when_idle(api, session.thread_id, lambda: start(create)) if wait_while_busy else start(create))
    try:
        added = [m for m in events.added_messages if m["role"] == "user"]
        yield Event("thread.run.created", run, Message.construct(**added[-1]) if added else None)
        while True:
            item = await events.get()
            if item is None:
                return
            event = Event.raw(*item)
            if event.event != "thread.run.requires_action":
                yield event
                continue
            outputs, ended = await _outputs_unless_ended(api, session.thread_id, event.data, report)
            if ended is not None:
                yield Event(f"thread.run.{ended.status}", ended)
                return
            stop_run_events(events)
            await start(lambda run_id=event.data.id, outputs=outputs: api.beta.threads.runs.submit_tool_outputs(
                run_id=run_id, thread_id=session.thread_id, tool_outputs=outputs))
    finally:
        stop_run_events(events)


async def turn_events(api: openai.AsyncOpenAI, session, text: str, *, wait_while_busy: bool,
                      check=None, report: ToolReport | None = None) -> AsyncIterator:
    """The streamed events of a turn's run, through every round of function calls.

    On ``thread.run.requires_action`` the assistant's function tools run here and the run goes on in a new
    stream (that event is not passed on). ``wait_while_busy``: retry while another run on the thread is active
    (the WebSocket turns), rather than raise the API's 400 (``astream``). ``check()`` (sync: the turn's quota)
    runs before anything is sent, on the thread that creates the run where that is this process's. Consume it
    inside ``contextlib.aclosing``, so the stream is closed as soon as the consumer stops. ``report`` hears of
    each function call before and after it runs (``tools.run_tool_calls``).
    """
    if in_process(api):
        async with contextlib.aclosing(_engine_events(api, session, text, wait_while_busy=wait_while_busy,
                                                      check=check, report=report)) as events:
            async for event in events:
                yield event
        return
    if check is not None:
        await sync_to_async(check)()
    manager = None

    async def open_stream():
        # Entering the SDK's stream manager sends the request, so an active-run refusal surfaces here, with
        # nothing added.
        nonlocal manager
        manager = api.beta.threads.runs.stream(**run_request(session, text))
        return await manager.__aenter__()

    stream = await (when_idle(api, session.thread_id, open_stream) if wait_while_busy else open_stream())
    try:
        while stream is not None:  # the run's stream, then one more per round of function calls
            current, stream = stream, None
            async for event in current:
                if event.event != "thread.run.requires_action":
                    yield event
                    continue
                outputs, ended = await _outputs_unless_ended(api, session.thread_id, event.data, report)
                if ended is not None:
                    yield Event(f"thread.run.{ended.status}", ended)
                    return
                await manager.__aexit__(None, None, None)
                manager = api.beta.threads.runs.submit_tool_outputs_stream(
                    run_id=event.data.id, thread_id=session.thread_id, tool_outputs=outputs)
                stream = await manager.__aenter__()
                break
    finally:
        await manager.__aexit__(None, None, None)


def _to_end_in_process(api: openai.OpenAI, session, text: str) -> tuple:
    """``run_to_end`` on the embedded backend in this process: its events from the engine's queue."""
    messages: list = []

    def call():
        if calls_store_directly(api):
            params = run_request(session, text)
            created = create_run_here(params.pop("thread_id"), params)
            if created is not None:
                return Run.construct(**created)
        return api.beta.threads.runs.create(**run_request(session, text))

    while True:
        with run_events() as events:
            try:
                run = call()
            except BaseException:
                stop_run_events(events)
                raise
        try:
            if events.run_id != run.id:
                raise RuntimeError(f"run {run.id} was not created in this process")
            ended = None  # the last run event's object: only that one is built as the SDK's Run
            while (item := events.get_blocking()) is not None:
                name, data = item
                if name in ("thread.message.completed", "thread.message.incomplete"):
                    messages.append(Message.construct(**data))
                elif name.startswith("thread.run.") and not name.startswith("thread.run.step."):
                    ended = data
            ended = Run.construct(**ended) if ended is not None else None
        finally:
            stop_run_events(events)
        if ended is None or ended.status != "requires_action":  # the model called the assistant's functions
            return ended, [m for m in messages if m.status == "completed"]
        outputs = outputs_for_run_sync(api, ended)
        call = lambda run=ended, outputs=outputs: api.beta.threads.runs.submit_tool_outputs(  # noqa: E731
            run_id=run.id, thread_id=session.thread_id, tool_outputs=outputs)


def _to_end_streamed(api: openai.OpenAI, session, text: str) -> tuple:
    """``run_to_end`` on a remote backend: streamed with the SDK's helper to its end (no polling)."""
    messages: list = []
    manager = api.beta.threads.runs.stream(**run_request(session, text))
    while True:
        with manager as stream:
            for event in stream:
                if event.event == "thread.message.completed":
                    messages.append(event.data)
            run = stream.current_run
        if run is None or run.status != "requires_action":
            return run, messages
        manager = api.beta.threads.runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=session.thread_id, tool_outputs=outputs_for_run_sync(api, run))


def run_to_end(api: openai.OpenAI, session, text: str) -> tuple:
    """A turn's run, from sync code, through its function-call rounds to its end: ``(run, completed messages)``;
    the run is None when no end event came."""
    return (_to_end_in_process if in_process(api) else _to_end_streamed)(api, session, text)
