"""The run engine: one event-loop thread per process that executes runs.

Runs are asynchronous as OpenAI's are: creating one returns at once and the
engine moves it along. Execution lives on a dedicated loop, not on the caller's,
because callers' loops come and go (``async_to_sync`` makes one per call, tests
make one per test) while a run must outlive the request that created it.

Streaming clients subscribe to a run's events; the engine pushes each event to
its subscribers' queues (``run_events.RunEvents``, bound to no loop).

The loop also keeps the beat of ``recovery``: every ``BETAASSI_RUN_HEARTBEAT_SECONDS``
one UPDATE stamps the runs this process executes, and a sweep ends the runs of
processes that died. Its database work has a thread of its own, so a busy engine
does not delay the stamps; it runs on the loop, so a loop that hangs stops them.
Runs' own database work goes to the engine's database threads (``db``), which keep
their connections (``kept_connections``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed

from betaassi_django import conf

from .kept_connections import close_thread_connections, on_kept_connection
from .run_events import STREAM_END_EVENTS, RunEvents, listener

logger = logging.getLogger("betaassi_django.engine")

#: Database threads of the engine on databases other than SQLite.
DB_THREADS = 4


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
        self._db_executor: ThreadPoolExecutor | None = None
        self._db_workers = 0

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="betaassi-run-engine", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def _db_threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._db_executor is None:
                from django.db import connection

                # One writer on SQLite (its lock admits one anyway); a few on other databases.
                self._db_workers = 1 if connection.vendor == "sqlite" else DB_THREADS
                self._db_executor = ThreadPoolExecutor(max_workers=self._db_workers,
                                                       thread_name_prefix="betaassi-run-db")
            return self._db_executor

    async def db(self, function: Callable, *args):
        """``function(*args)`` on the engine's database threads, which keep their connections between calls.

        Why not ``database_sync_to_async``: it closes the thread's connection after every call when
        ``CONN_MAX_AGE`` is 0 (the project's setting), so each of a run's three transactions opened a new
        connection. These threads are the engine's own (no request ever runs on them), so a connection kept
        there is one per thread, not one per run; a broken one is replaced before the next call. Handed to the
        executor directly, not through ``sync_to_async``: nothing here needs asgiref's context or thread
        bookkeeping (Django's connections are per thread), and a run makes several of these calls.
        """
        return await asyncio.wrap_future(self._db_threads().submit(on_kept_connection, function, *args))

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

    def adopt_listener(self, run_id: str, added_messages: list[dict] | None = None) -> None:
        """Subscribe the caller's ``listening()`` queue, if any and still free, to ``run_id`` (the store calls
        this before the run's execution is submitted, so no event is missed)."""
        events = listener()
        if events is not None and events.run_id is None:
            events.run_id, events.added_messages = run_id, added_messages or []
            with self._lock:
                self._subscribers.setdefault(run_id, []).append(events)

    def unsubscribe(self, run_id: str, events: RunEvents) -> None:
        with self._lock:
            subscribers = self._subscribers.get(run_id, [])
            if events in subscribers:
                subscribers.remove(events)
            if not subscribers:
                self._subscribers.pop(run_id, None)

    def publish(self, run_id: str, event: str, data: dict) -> None:
        """Push ``(event, data)`` to the run's subscribers; an event that ends the stream ends theirs too.

        The subscribers an end event reaches are taken off the run as they are read, in one step: a client that
        acts on ``requires_action`` at once subscribes to the run's next execution (it submits its tool outputs)
        while this thread may not have gone on yet, and that stream, which this event never reached, must not be
        ended here. Ended in a second step after the pushes, it was ended without an event, and the WebSocket
        turn reading it stopped without its reply (seen on a loaded machine: a quick function's round).
        """
        ends = event in STREAM_END_EVENTS
        with self._lock:
            subscribers = self._subscribers.pop(run_id, []) if ends else list(self._subscribers.get(run_id, ()))
        for events in subscribers:
            events.push((event, data))
            if ends:
                events.push(None)

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
        with self._lock:
            executor, self._db_executor = self._db_executor, None
        if executor is not None:  # each thread closes its own connection, then the threads end
            close_thread_connections(executor, self._db_workers)
            executor.shutdown(wait=True)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._cancel_requested.discard(run_id)


engine = RunEngine()


def _timing_changed(setting: str, **kwargs) -> None:
    if setting.startswith("BETAASSI_RUN_"):
        engine.wake_beat()


setting_changed.connect(_timing_changed)
