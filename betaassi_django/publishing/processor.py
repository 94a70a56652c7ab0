"""The publish-queue processor: applies each assistant's events in order, under a lease.

Per batch: one list of the events after the high water mark, then the writes:
every changed page (with ``applied``), then the root (with ``hwm``). The
rules that make this crash-safe live in :mod:`.apply`; this module does the
backend I/O, the local bookkeeping (``PublishedEvent``, ``Session``) and the
lease.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid

import openai
from django.contrib.auth import get_user_model
from django.db import transaction

from betaassi_django.client import get_client
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.models import PublishedEvent, Session

from . import lease, signals
from .apply import Batch, session_from_record
from .apply import apply_events as fold
from .backend import PUBLISH_KEY, REGISTRY_KEY, delete_threads, load_registry
from .registry import Page, Root, double, needs_growth
from .wake import Waker

logger = logging.getLogger("betaassi_django.publishing")


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Processor:
    """Drains publish queues. ``run_once()`` processes everything pending and returns the events seen."""

    def __init__(self, *, holder: str | None = None, assistant_ids: list[str] | None = None,
                 batch_size: int = 100, lease_seconds: float = 30.0) -> None:
        self.holder = holder or default_holder()
        self.assistant_ids = assistant_ids
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.api = get_client()

    # -- discovery ----------------------------------------------------------------

    def assistants(self) -> list[openai.types.beta.Assistant]:
        """Every backend assistant with a publish queue (or the ones asked for)."""
        if self.assistant_ids:
            return [self.api.beta.assistants.retrieve(aid) for aid in self.assistant_ids]
        return [a for a in self.api.beta.assistants.list(limit=100, order="asc")
                if (a.metadata or {}).get(PUBLISH_KEY) and (a.metadata or {}).get(REGISTRY_KEY)]

    def serve(self, interval: float, stop: threading.Event) -> None:
        """Process until ``stop`` is set: at once when woken, else every ``interval`` seconds."""
        waker = Waker()
        while not stop.is_set():
            signals.local_wake.clear()
            try:
                self.run_once()
            except Exception:  # the backend is down or a database hiccup: log it, keep serving
                logger.exception("processing failed; retrying in %ss", interval)
            waker.wait(interval)

    def run_once(self) -> int:
        seen = 0
        for assistant in self.assistants():
            if not lease.acquire(assistant.id, self.holder, self.lease_seconds):
                continue
            logger.debug("lease acquired assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
            try:
                seen += self.drain(assistant)
            finally:
                logger.debug("lease released assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
                lease.release(assistant.id, self.holder)
        return seen

    # -- one assistant ----------------------------------------------------------

    def drain(self, assistant) -> int:
        metadata = assistant.metadata or {}
        root, pages = load_registry(self.api, metadata[REGISTRY_KEY])
        seen = 0
        while True:
            listed = self.api.beta.threads.messages.list(metadata[PUBLISH_KEY], order="asc",
                                                         limit=self.batch_size, after=root.hwm or openai.omit)
            events = [(m.id, "".join(p.text.value for p in m.content if p.type == "text")) for m in listed.data]
            if not events:
                return seen
            if not lease.acquire(assistant.id, self.holder, self.lease_seconds):
                logger.warning("lost the lease of %s; stopping", assistant.id)
                return seen
            now = int(datetime.datetime.now(tz=datetime.UTC).timestamp())
            batch = fold(root, pages, events, now)
            old_pages = None
            if any(needs_growth(root, pages, page) for page in pages):
                old_pages = pages
                pages = double(root, pages, self._new_page)
                for page in pages:
                    page.applied = root.hwm
                batch.changed = set(range(len(pages)))
            # Everything before the root write is safe to redo, so a crash anywhere loses nothing:
            # assistant.set values are absolute, and the local log and mirror are rewritten on replay.
            for field, value in batch.settings:
                self._set_attr(assistant, field, value)
            self._record(assistant, batch, root, pages)
            self._commit(root, pages, batch)
            if old_pages is not None:
                delete_threads(self.api, [p.thread_id for p in old_pages])
            delete_threads(self.api, batch.deleted_threads)
            signals.broadcast(assistant.id, [
                {"event_id": o.event_id, "op": o.op, "session_id": o.session_id, "status": o.status}
                for o in batch.outcomes])
            seen += len(events)

    def _new_page(self) -> Page:
        return Page(self.api.beta.threads.create(metadata=Page("").to_metadata()).id)

    def _commit(self, root: Root, pages: list[Page], batch: Batch) -> None:
        """The changed pages, then the root: the high water mark moves last."""
        for index in sorted(batch.changed):
            self.api.beta.threads.update(pages[index].thread_id, metadata=pages[index].to_metadata())
        self.api.beta.threads.update(root.thread_id, metadata=root.to_metadata())

    def _record(self, assistant, batch: Batch, root: Root, pages: list[Page]) -> None:
        """The local event log and Session mirror, in one transaction."""
        with transaction.atomic():
            for outcome in batch.outcomes:
                level = logging.WARNING if outcome.status == "rejected" else logging.INFO
                logger.log(level, "event=%s assistant=%s op=%s session=%s status=%s reason=%s", outcome.event_id,
                           assistant.id, outcome.op, outcome.session_id, outcome.status, outcome.reason or "-")
                fields = {"assistant_id": assistant.id, "op": outcome.op, "session_id": outcome.session_id,
                          "status": outcome.status, "reason": outcome.reason}
                if outcome.status == "replayed":  # applied before a crash: keep what was recorded then
                    fields.update(status="applied")
                    PublishedEvent.objects.get_or_create(event_id=outcome.event_id, defaults=fields)
                else:
                    PublishedEvent.objects.update_or_create(event_id=outcome.event_id, defaults=fields)
            touched = {o.session_id for o in batch.outcomes if o.session_id and o.status in ("applied", "replayed")}
            for session_id in touched:
                self._mirror(assistant.id, session_id, pages[root.bucket(session_id)].sessions.get(session_id))

    def _mirror(self, assistant_id: str, session_id: str, record: dict | None) -> None:
        mirror_session(assistant_id, session_id, record)

    def _set_attr(self, assistant, field: str, value) -> None:
        """assistant.set: through the assistant's own model class, so the codec and checks apply."""
        from django.apps import apps

        label = (assistant.metadata or {}).get(TYPE_KEY, "")
        try:
            model = apps.get_model(label)
            instance = model.retrieve(assistant.id)
            setattr(instance, field, value)
            instance.save()
        except Exception as exc:  # a bad value is the publisher's problem: record it, keep going
            logger.warning("assistant.set %s=%r on %s failed: %s", field, value, assistant.id, exc)


def mirror_session(assistant_id: str, session_id: str, record: dict | None) -> None:
    """Write one registry record into the ``Session`` mirror (None: the session is gone)."""
    if record is None:
        Session.objects.filter(assistant_id=assistant_id, session_id=session_id).delete()
        return
    data = session_from_record(session_id, record)
    owner = get_user_model().objects.filter(pk=data["owner"]).first()
    Session.objects.update_or_create(assistant_id=assistant_id, session_id=session_id, defaults={
        "owner": owner, "kind": data["kind"], "context_messages": data["context_messages"],
        "model": data["model"], "thread_id": data["thread_id"], "revision": data["revision"],
        "created_at": datetime.datetime.fromtimestamp(data["created_at"], tz=datetime.UTC)})
