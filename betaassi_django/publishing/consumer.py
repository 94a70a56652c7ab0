"""Durable consumers of assistants' publish queues (docs/consumers.md).

A named consumer keeps its position (the last event it committed, ``hwm``) in a ``StreamThread`` of its own,
which the publish thread's directory names (``consumer:<name>``), so every process and deployment sharing the
backend finds it. Delivery is at least once: events are read after the committed position, handed out, and the
position moves only on ``commit()``; a process that dies first sees them again, with the same ids. A lease per
consumer name and assistant (``ConsumerLease``) gives each assistant's queue to one process at a time
(``holds``: the leases and positions). Per batch: one list of the publish thread, and one position write when
committed. This module reads the batches, hands them out and waits for more, woken by publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import openai
from asgiref.sync import sync_to_async

from . import notify
from .backend import publish_thread, queue_ids
from .holds import QueueHolds, Track
from .positions import STARTS, check_name, root_hwm
from .queue_event import QueueEvent, to_event

logger = logging.getLogger("betaassi_django.publishing")


@dataclass
class _Batch:
    track: Track
    events: list[QueueEvent] = field(default_factory=list)
    end: str = ""


class Consumer(QueueHolds):
    """A named, durable consumer of one assistant's queue, a class's, or every assistant's."""

    #: The app's own consumers (``betaassi.`` names) set this.
    reserved_ok = False
    #: The queue's own bookkeeping: passed like filtered-out events (the app's own consumers see them).
    hidden_ops: tuple[str, ...] = ("consumer.register", "consumer.unregister")

    def __init__(self, name: str, *, assistant_ids: list[str] | None = None, assistant_class: str | None = None,
                 types: list[str] | None = None, start: str = "oldest", batch_size: int = 100,
                 holder: str | None = None, lease_seconds: float = 30.0, poll_interval: float = 1.0,
                 applied_only: bool = False, register_timeout: float = 10.0) -> None:
        name = check_name(name, reserved_ok=self.reserved_ok)
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}")
        if not 1 <= batch_size <= 100:
            raise ValueError("batch_size must be from 1 to 100")
        super().__init__(name, assistant_ids=assistant_ids, assistant_class=assistant_class, start=start,
                         holder=holder, lease_seconds=lease_seconds, applied_only=applied_only,
                         register_timeout=register_timeout)
        self.types, self.batch_size = types, batch_size
        self.poll_interval = poll_interval
        self.behind: list[tuple[str, str, str]] = []
        self._turn = 0
        self._woken = threading.Event()
        self._aio: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._listener = None
        self._interrupted = False
        notify.subscribe(self._wake)

    # -- reading -------------------------------------------------------------------------------------------

    def _list(self, track: Track) -> list:
        """The events after the track's read position (from the oldest retained one if it was removed)."""
        publish_id, _ = queue_ids(track.assistant)
        try:
            return publish_thread(self.api, publish_id, after=track.read, limit=self.batch_size).data
        except openai.BadRequestError as exc:
            if not track.read or getattr(exc, "code", None) != "invalid_cursor":
                raise
        listed = publish_thread(self.api, publish_id, limit=self.batch_size).data
        restart = listed[0].id if listed else ""
        logger.warning("consumer %s on %s: its position %s was removed by retention; restarting from the oldest "
                       "retained event %s", self.name, track.id, track.read, restart or "(none)")
        self.behind.append((track.id, track.read, restart))
        track.read = ""
        return listed

    def _batch(self, track: Track) -> _Batch | None:
        """The next events of one held assistant that pass the filter (filtered ones still move the target)."""
        while True:
            limit = None
            if self.applied_only:
                limit = root_hwm(self.api, queue_ids(track.assistant)[1])
                if limit == track.read:
                    return None
            listed = self._list(track)
            if limit is not None:
                ids = [m.id for m in listed]
                listed = listed[:ids.index(limit) + 1] if limit in ids else (
                    listed if len(listed) == self.batch_size else [])
            if not listed:
                return None
            track.read = listed[-1].id
            events = [to_event(track.id, m, with_status=self.applied_only) for m in listed]
            events = [e for e in events if self._wanted(e)]
            if events:
                return _Batch(track, events, listed[-1].id)
            track.target = listed[-1].id

    def _wanted(self, event: QueueEvent) -> bool:
        """Invalid bodies always reach the consumer (it cannot tell their type); others by ``types``."""
        if event.op in self.hidden_ops:
            return False
        return not self.types or event.type is None or any(fnmatch.fnmatchcase(event.type, p) for p in self.types)

    def _next(self) -> _Batch | None:
        self._refresh()
        tracks = list(self._tracks.values())
        for offset in range(len(tracks)):
            track = tracks[(self._turn + offset) % len(tracks)]
            if self._hold(track):
                batch = self._batch(track)
                if batch is not None:
                    self._turn = (self._turn + offset + 1) % len(tracks)
                    return batch
        return None

    def poll(self) -> list[QueueEvent]:
        """One batch of one assistant whose lease this process holds ([] when none is pending)."""
        batch = self._next()
        if batch is None:
            return []
        batch.track.target = batch.end
        return batch.events

    def _hand_out(self, batch: _Batch) -> Iterator[QueueEvent]:
        """A batch's events one by one; ``commit()`` covers each once the next is asked for."""
        for event in batch.events:
            batch.track.previous, batch.track.target = batch.track.target, event.id
            yield event
        batch.track.target = batch.end

    def _wait_for(self, deadline: float | None) -> float | None:
        """Seconds to wait for a wake-up before the next poll; None: the iteration is over."""
        left = None if deadline is None else deadline - time.monotonic()
        if self._interrupted or (left is not None and left <= 0):
            return None
        return self.poll_interval if left is None else min(self.poll_interval, left)

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def events(self, timeout: float | None = None) -> Iterator[QueueEvent]:
        """Events as they come, committing each batch when asked for the next; ends after ``timeout`` seconds
        without one (None: never), or when interrupted. Woken by publishes; polls every ``poll_interval``."""
        self._listen()
        self._interrupted = False
        deadline = self._deadline(timeout)
        while True:
            self.commit()
            self._woken.clear()
            batch = self._next()
            if batch is not None:
                yield from self._hand_out(batch)
                deadline = self._deadline(timeout)
                continue
            wait = self._wait_for(deadline)
            if wait is None:
                return
            self._woken.wait(wait)
            if self._interrupted:
                return

    async def aevents(self, timeout: float | None = None) -> AsyncIterator[QueueEvent]:
        """``events()`` for async code: the backend calls run in a worker thread, the waits on the loop."""
        self._listen()
        self._interrupted = False
        woken = asyncio.Event()
        self._aio = (asyncio.get_running_loop(), woken)
        deadline = self._deadline(timeout)
        while True:
            await sync_to_async(self.commit)()
            woken.clear()
            batch = await sync_to_async(self._next)()
            if batch is not None:
                for event in self._hand_out(batch):
                    yield event
                deadline = self._deadline(timeout)
                continue
            wait = self._wait_for(deadline)
            if wait is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait)
            if self._interrupted:
                return

    # -- wake-ups and the end ------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """End a running ``events()`` / ``aevents()`` at its next wait (safe from a signal handler or another
        thread); the next call iterates again."""
        self._interrupted = True
        self._wake()

    def _wake(self) -> None:
        self._woken.set()
        if self._aio is not None:
            loop, woken = self._aio
            if not loop.is_closed():
                loop.call_soon_threadsafe(woken.set)

    def _listen(self) -> None:
        """Wake-ups from other processes, when the channel layer crosses processes (Redis)."""
        if self._listener is None and notify.shared_layer() is not None:
            from .wake import Waker

            self._listener = Waker()

    def close(self) -> None:
        """Release this process's leases and stop listening (uncommitted events are handed out again)."""
        notify.unsubscribe(self._wake)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._release()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AppConsumer(Consumer):
    """A consumer of the app's own (``betaassi.`` names: a deployment's mirror follower); it sees every event."""

    reserved_ok = True
    hidden_ops = ()


def assistant_consumer(target, name: str, **options) -> Consumer:
    """``assistant.consumer(name)``: one assistant (an instance) or every assistant of a class."""
    if isinstance(target, type):
        return Consumer(name, assistant_class=target._meta.label, **options)
    return Consumer(name, assistant_ids=[target.id], **options)
