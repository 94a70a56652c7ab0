"""A durable consumer's hold on each queue it follows: which assistants, the lease, the committed position.

This is what makes a consumer's delivery at least once and one process per queue: ``QueueHolds`` finds the
assistants to follow, takes or renews each one's ``ConsumerLease``, reads the position from the consumer's
``StreamThread`` (registering the name first when the directory lacks it), and writes it back on ``commit()``
only while the lease is still held. ``consumer.Consumer`` builds the reading and the waiting on top of it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from betaassi_django.client import get_client
from betaassi_django.metadata import PUBLISH_KEY, REGISTRY_KEY, TYPE_KEY

from . import directory, lease
from .backend import queue_ids
from .positions import model, newest, registered, root_hwm
from .queue_event import QueueEvent

logger = logging.getLogger("betaassi_django.publishing")


@dataclass
class Track:
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


class QueueHolds:
    """The assistants a named consumer follows, each one's lease and committed position (``Track``)."""

    def __init__(self, name: str, *, assistant_ids: list[str] | None, assistant_class: str | None, start: str,
                 holder: str | None, lease_seconds: float, applied_only: bool, register_timeout: float) -> None:
        self.name = name
        self.assistant_ids, self.assistant_class = assistant_ids, assistant_class
        self.start = start
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.applied_only, self.register_timeout = applied_only, register_timeout
        self.api = get_client()
        self._tracks: dict[str, Track] = {}
        self._listed_at: float | None = None

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
            self._tracks.setdefault(assistant.id, Track(assistant))

    # -- the lease and the position ---------------------------------------------------------------------

    def _hold(self, track: Track) -> bool:
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

    def _load(self, track: Track) -> None:
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

    def _release(self) -> None:
        """Release this process's leases (uncommitted events are handed out again)."""
        for track in self._tracks.values():
            if track.renewed is not None:
                logger.debug("consumer lease released consumer=%s assistant=%s holder=%s t=%.6f", self.name,
                             track.id, self.holder, time.time())
                lease.release(track.id, self.holder, consumer=self.name)
                track.renewed = None
