"""Durable consumers of assistants' publish queues (docs/consumers.md).

A named consumer keeps its position (the last event it committed, ``hwm``) in a ``StreamThread`` of its own,
which the publish thread's directory names (``consumer:<name>``), so every process and deployment sharing the
backend finds it. Delivery is at least once: events are read after the committed position, handed out, and the
position moves only on ``commit()``; a process that dies first sees them again, with the same ids. A lease per
consumer name and assistant (``ConsumerLease``) gives each assistant's queue to one process at a time. Per batch:
one list of the publish thread, and one position write when committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
from asgiref.sync import sync_to_async

from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.metadata import PUBLISH_KEY, REGISTRY_KEY, TYPE_KEY

from . import directory, lease, notify
from .backend import publish_thread, queue_ids
from .events import Rejected, read
from .positions import STARTS, check_name, model, newest, registered, root_hwm
from .registrations import REASON_KEY, STATUS_KEY

logger = logging.getLogger("betaassi_django.publishing")

@dataclass(frozen=True)
class QueueEvent:
    """One event of a publish queue, as a consumer receives it."""

    id: str
    assistant_id: str
    op: str | None
    type: str | None
    data: Any
    session_id: str | None
    created_at: int
    rejected: str | None = None
    status: str | None = None
    reason: str | None = None  # the processor's reason for a noop or rejected verdict (applied_only)


def to_event(assistant_id: str, message, *, with_status: bool = False) -> QueueEvent:
    """A publish-thread message as a ``QueueEvent`` (an invalid body: ``op`` None and ``rejected`` its reason);
    ``with_status``: with the processor's verdict read from the message (``registrations``)."""
    parsed = read(text_of(message))
    status = reason = None
    if with_status:
        verdict = message.metadata or {}
        status, reason = verdict.get(STATUS_KEY), verdict.get(REASON_KEY)
    if isinstance(parsed, Rejected):
        return QueueEvent(message.id, assistant_id, None, None, None, None, message.created_at, str(parsed),
                          status or ("rejected" if with_status else None), reason)
    app = parsed.op == "app.event"
    if with_status and status is None:
        status = "passed" if app else "applied"
    return QueueEvent(message.id, assistant_id, parsed.op, parsed.args.get("type") if app else parsed.op,
                      parsed.args.get("data") if app else parsed.args, parsed.session_id, message.created_at,
                      None, status, reason)


@dataclass
class _Track:
    """One followed assistant: its queue, the position thread, and where reading and committing stand."""

    assistant: Any
    thread: Any = None  # the StreamThread, once read under the lease
    committed: str = ""  # the position the thread holds
    read: str = ""  # the last event listed
    target: str = ""  # what commit() writes: the last event handed out (or passed by the filter)
    previous: str = ""  # the target before the last event was handed out (``requeue``)
    renewed: float | None = None  # time.monotonic() of the last successful acquire, None: not held

    @property
    def id(self) -> str:
        return self.assistant.id


@dataclass
class _Batch:
    track: _Track
    events: list[QueueEvent] = field(default_factory=list)
    end: str = ""


class Consumer:
    """A named, durable consumer of one assistant's queue, a class's, or every assistant's."""

    #: The app's own consumers (``betaassi.`` names) set this.
    reserved_ok = False
    #: The queue's own bookkeeping: passed like filtered-out events (the app's own consumers see them).
    hidden_ops: tuple[str, ...] = ("consumer.register", "consumer.unregister")

    def __init__(self, name: str, *, assistant_ids: list[str] | None = None, assistant_class: str | None = None,
                 types: list[str] | None = None, start: str = "oldest", batch_size: int = 100,
                 holder: str | None = None, lease_seconds: float = 30.0, poll_interval: float = 1.0,
                 applied_only: bool = False, register_timeout: float = 10.0) -> None:
        self.name = check_name(name, reserved_ok=self.reserved_ok)
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}")
        if not 1 <= batch_size <= 100:
            raise ValueError("batch_size must be from 1 to 100")
        self.assistant_ids, self.assistant_class = assistant_ids, assistant_class
        self.types, self.start, self.batch_size = types, start, batch_size
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds, self.poll_interval = lease_seconds, poll_interval
        self.applied_only, self.register_timeout = applied_only, register_timeout
        self.behind: list[tuple[str, str, str]] = []
        self.api = get_client()
        self._tracks: dict[str, _Track] = {}
        self._listed_at: float | None = None
        self._turn = 0
        self._woken = threading.Event()
        self._aio: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._listener = None
        self._interrupted = False
        notify.subscribe(self._wake)

    # -- which assistants ------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Find the assistants to follow: once for named ones, at most every 10 s for a class or all."""
        if self._listed_at is not None and (self.assistant_ids or time.monotonic() - self._listed_at < 10):
            return
        self._listed_at = time.monotonic()
        if self.assistant_ids:
            found = [self.api.beta.assistants.retrieve(a) for a in self.assistant_ids]
        else:
            found = [a for a in self.api.beta.assistants.list(limit=100, order="asc")
                     if (a.metadata or {}).get(PUBLISH_KEY) and (a.metadata or {}).get(REGISTRY_KEY)
                     and (self.assistant_class is None or (a.metadata or {}).get(TYPE_KEY) == self.assistant_class)]
        for assistant in found:
            self._tracks.setdefault(assistant.id, _Track(assistant))

    # -- the lease and the position ---------------------------------------------------------------------

    def _hold(self, track: _Track) -> bool:
        """Take or renew the lease; (re)read the position unless it was held without a gap."""
        now = time.monotonic()
        if not lease.acquire(track.id, self.holder, self.lease_seconds, consumer=self.name):
            if track.renewed is not None:
                logger.warning("consumer %s lost the lease of %s to another process", self.name, track.id)
                track.renewed, track.thread = None, None
            return False
        continuous = track.renewed is not None and now - track.renewed < self.lease_seconds * 0.9
        if track.renewed is None:
            logger.debug("consumer lease acquired consumer=%s assistant=%s holder=%s t=%.6f", self.name, track.id,
                         self.holder, time.time())
        track.renewed = now
        if not continuous or track.thread is None:
            self._load(track)
        return True

    def _load(self, track: _Track) -> None:
        """The position thread, registering the name first if the directory lacks it."""
        publish_id, root_id = queue_ids(track.assistant)
        thread_id = directory.read(self.api, publish_id).get(self.name)
        if not thread_id:
            position = self._start_position(publish_id, root_id)
            thread_id = registered(self.api, track.assistant, self.name, position, self.register_timeout)
        track.thread = model().retrieve(thread_id)
        track.committed = track.read = track.target = track.thread.hwm

    def _start_position(self, publish_id: str, root_id: str):
        if self.start == "oldest":
            return lambda: ""
        if self.applied_only:
            return lambda: root_hwm(self.api, root_id)
        return lambda: newest(self.api, publish_id)

    def commit(self) -> None:
        """Write each assistant's position: the last event handed out (one write per assistant that moved)."""
        for track in self._tracks.values():
            if track.thread is None or track.target == track.committed:
                continue
            read, target, committed = track.read, track.target, track.committed
            if not self._hold(track) or track.committed != committed:
                # Another process held it meanwhile (its position rules): what was handed out comes again.
                logger.warning("consumer %s: not committing %s on %s (the lease lapsed)", self.name, target,
                               track.id)
                track.read = track.target = track.committed
                continue
            track.read, track.target = read, target  # a re-read under a renewed lease found it unmoved
            track.thread.hwm = target
            track.thread.save()
            track.committed = target

    def requeue(self, event: QueueEvent) -> None:
        """Take back the last event ``events()`` handed out: ``commit()`` stops before it, and it comes again
        (``consume_queue`` stopping in the middle of an event's retries)."""
        track = self._tracks.get(event.assistant_id)
        if track is not None and track.target == event.id:
            track.target = track.read = track.previous

    def positions(self) -> dict[str, str]:
        """Assistant id -> committed position, as the position threads hold it (one read per assistant)."""
        self._refresh()
        found = {}
        for track in self._tracks.values():
            publish_id, _ = queue_ids(track.assistant)
            thread_id = directory.read(self.api, publish_id).get(self.name)
            if thread_id:
                found[track.id] = (self.api.beta.threads.retrieve(thread_id).metadata or {}).get("hwm", "")
        return found

    # -- reading -------------------------------------------------------------------------------------------

    def _list(self, track: _Track) -> list:
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

    def _batch(self, track: _Track) -> _Batch | None:
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
        for track in self._tracks.values():
            if track.renewed is not None:
                logger.debug("consumer lease released consumer=%s assistant=%s holder=%s t=%.6f", self.name,
                             track.id, self.holder, time.time())
                lease.release(track.id, self.holder, consumer=self.name)
                track.renewed = None

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
