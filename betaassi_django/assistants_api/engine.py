"""The run engine: one event-loop thread per process that executes runs.

Runs are asynchronous as OpenAI's are: creating one returns at once and the
engine moves it along. Execution lives on a dedicated loop, not on the caller's,
because callers' loops come and go (``async_to_sync`` makes one per call, tests
make one per test) while a run must outlive the request that created it.

Streaming clients subscribe to a run's events. ``RunEvents`` is thread-safe and
not bound to any event loop, so a subscriber may wait from daphne's loop, from a
test's loop, or from the short-lived loops of the sync in-process transport.

The loop also keeps the beat of ``recovery``: every ``BETAASSI_RUN_HEARTBEAT_SECONDS``
one UPDATE stamps the runs this process executes, and a sweep ends the runs of
processes that died. Its database work has a thread of its own, so a busy engine
does not delay the stamps; it runs on the loop, so a loop that hangs stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed

from betaassi_django import conf

logger = logging.getLogger("betaassi_django.engine")

#: Events after which a run's stream ends (the client must act or it is over).
STREAM_END_EVENTS = frozenset(
    {
        "thread.run.completed",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.incomplete",
        "thread.run.requires_action",
    }
)


class RunEvents:
    """One subscriber's queue of ``(event, data)`` pairs; ``None`` ends it."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None

    def push(self, item: tuple[str, dict] | None) -> None:
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, future = waiter
            with contextlib.suppress(RuntimeError):  # the subscriber's loop is gone
                loop.call_soon_threadsafe(_wake, future)

    async def get(self) -> tuple[str, dict] | None:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._waiter = (loop, future)
            await future


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class RunEngine:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, list[RunEvents]] = {}
        self._cancel_requested: set[str] = set()
        #: Run id -> executions of it submitted in this process and not yet over.
        self._executing: dict[str, int] = {}
        self._beat: Future | None = None
        self._beat_wake: asyncio.Event | None = None
        self._beat_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="betaassi-run-heartbeat")
        self._beat_failing = False
        self._stopped = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="betaassi-run-engine", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def start(self) -> None:
        """Start the loop and its heartbeat and sweep (idempotent: every entry point may call it)."""
        if self._beat is not None or self._stopped:
            return
        loop = self._ensure_loop()
        with self._lock:
            if self._beat is None and not self._stopped:
                self._beat = contextvars.Context().run(asyncio.run_coroutine_threadsafe, self._beat_forever(), loop)

    def submit(self, run_id: str, execute: Callable[[str], Awaitable[None]]) -> Future:
        """Run ``execute(run_id)`` (``execution.execute_run``) on the engine loop, the run counted as this
        process's (stamped, not swept) until it returns.

        The engine is given the function rather than importing it: execution publishes through the engine,
        so the engine stays below it.
        """
        loop = self._ensure_loop()
        self.start()
        with self._lock:
            self._executing[run_id] = self._executing.get(run_id, 0) + 1
        try:
            # An empty context: the run must not inherit the caller's asgiref
            # context, which would send its database work to the caller's thread.
            return contextvars.Context().run(asyncio.run_coroutine_threadsafe, self._execute(run_id, execute), loop)
        except BaseException:
            self._done_executing(run_id)  # never stamped, so a sweep ends it
            raise

    async def _execute(self, run_id: str, execute: Callable[[str], Awaitable[None]]) -> None:
        try:
            await execute(run_id)
        finally:
            self._done_executing(run_id)

    def _done_executing(self, run_id: str) -> None:
        with self._lock:
            left = self._executing.pop(run_id, 1) - 1
            if left:
                self._executing[run_id] = left

    def executing(self) -> list[str]:
        """The runs this process executes (queued here or streaming)."""
        with self._lock:
            return list(self._executing)

    async def _beat_forever(self) -> None:
        self._beat_wake = asyncio.Event()
        while True:
            interval = 5.0
            try:
                await sync_to_async(self._beat_once, thread_sensitive=False, executor=self._beat_executor)()
                interval = conf.get().run_heartbeat_seconds
            except Exception:  # the beat must outlive anything (a configuration error is reported elsewhere too)
                logger.exception("run heartbeat failed")
            self._beat_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_wake.wait(), interval)

    def _beat_once(self) -> None:
        """Stamp this process's runs, then end abandoned ones; a failure (the database is away) is retried."""
        from django.db import connection

        from . import recovery

        if self._stopped:
            return
        executing = self.executing()
        try:
            recovery.heartbeat(executing)
            recovery.sweep(executing)
        except Exception:
            # Logged once per outage: the beat retries every interval.
            if not self._beat_failing:
                logger.exception("run heartbeat failed; retrying every beat")
            self._beat_failing = True
        else:
            if self._beat_failing:
                logger.warning("run heartbeat works again")
            self._beat_failing = False
        finally:
            connection.close()  # nothing kept between beats (a pool's connection goes back to it)

    def wake_beat(self) -> None:
        """Beat now (the timing settings changed)."""
        loop, wake = self._loop, self._beat_wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def subscribe(self, run_id: str) -> RunEvents:
        events = RunEvents()
        with self._lock:
            self._subscribers.setdefault(run_id, []).append(events)
        return events

    def unsubscribe(self, run_id: str, events: RunEvents) -> None:
        with self._lock:
            subscribers = self._subscribers.get(run_id, [])
            if events in subscribers:
                subscribers.remove(events)
            if not subscribers:
                self._subscribers.pop(run_id, None)

    def publish(self, run_id: str, event: str, data: dict) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(run_id, ()))
        for events in subscribers:
            events.push((event, data))
        if event in STREAM_END_EVENTS:
            self.end(run_id)

    def end(self, run_id: str) -> None:
        """Close every subscriber's stream of this run."""
        with self._lock:
            ended = self._subscribers.pop(run_id, [])
        for events in ended:
            events.push(None)

    def request_cancel(self, run_id: str) -> None:
        """Tell a run executing in this process to stop at its next delta."""
        with self._lock:
            self._cancel_requested.add(run_id)

    def cancel_requested(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._cancel_requested

    def close_connections(self) -> None:
        """Stop the beat and close the database connections the engine's work holds (before dropping a test
        database)."""
        with self._lock:
            self._stopped = True
            beat, self._beat = self._beat, None
        if beat is not None:
            beat.cancel()
        self._beat_executor.submit(lambda: None).result(30)  # a beat under way ends first
        if self._loop is None:
            return
        from asgiref.sync import sync_to_async
        from django.db import connections

        async def close() -> None:
            await sync_to_async(connections.close_all)()

        contextvars.Context().run(asyncio.run_coroutine_threadsafe, close(), self._loop).result(30)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._cancel_requested.discard(run_id)


engine = RunEngine()


def _timing_changed(setting: str, **kwargs) -> None:
    if setting.startswith("BETAASSI_RUN_"):
        engine.wake_beat()


setting_changed.connect(_timing_changed)
