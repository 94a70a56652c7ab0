"""A run's events as its subscribers receive them: ``RunEvents``, and ``listening()`` for in-process callers.

Streaming clients subscribe to a run's events (``RunEngine.subscribe``). ``RunEvents`` is thread-safe and not
bound to any event loop, so a subscriber may wait from daphne's loop, from a test's loop, from the short-lived
loops of the sync in-process transport, or block in sync code; the engine pushes to it from its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import deque
from collections.abc import Iterator

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
        self._ready = threading.Condition(self._lock)
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None
        #: The run subscribed to, once the store adopted this queue (``RunEngine.adopt_listener``), and the
        #: messages created with it (``additional_messages``, as the API serialises them).
        self.run_id: str | None = None
        self.added_messages: list[dict] = []

    def push(self, item: tuple[str, dict] | None) -> None:
        with self._lock:
            self._items.append(item)
            self._ready.notify()
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

    def get_blocking(self, timeout: float | None = None) -> tuple[str, dict] | None:
        """``get()`` for sync code (``ask``): the next item as soon as it is pushed; TimeoutError after
        ``timeout`` seconds without one."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: self._items, timeout):
                raise TimeoutError
            return self._items.popleft()


#: An in-process caller's queue for the run its next API call creates or continues (``listening``).
_listener: contextvars.ContextVar[RunEvents | None] = contextvars.ContextVar("betaassi_run_listener", default=None)


@contextlib.contextmanager
def listening() -> Iterator[RunEvents]:
    """Receive the events of the run that a call made inside this block, in this process and context (the
    in-process transports run the views in the caller's context), creates or continues.

    Why: a session's turn in the process that executes its run reads the engine's ``(event, data)`` pairs
    directly, rather than the same events encoded as server-sent events and parsed again by the SDK. The
    store adopts the queue (``RunEngine.adopt_listener``) where the run is created or queued again; the
    caller unsubscribes it (``RunEngine.unsubscribe``) when done.
    """
    events = RunEvents()
    token = _listener.set(events)
    try:
        yield events
    finally:
        _listener.reset(token)


def listener() -> RunEvents | None:
    """The queue of the innermost ``listening()`` block in this context, if any."""
    return _listener.get()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
