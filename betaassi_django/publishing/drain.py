"""One assistant's queue, drained under the lease: the batches, the registry writes, the local bookkeeping.

Per batch: one list of the events after the high water mark (up to 10 lists for a backlog), then the writes:
every changed bucket (new overflow pages first, then its head, with ``applied``), then the root (with ``hwm``);
only then the local bookkeeping (``PublishedEvent``, ``Session``), so after any failure the local tables hold
what the registry committed. The rules that make this crash-safe live in :mod:`.apply`; this module does the
backend I/O and the local bookkeeping. Which queues to drain, and when, is :mod:`.processor`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time

import openai
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import transaction

from betaassi_django import quotas
from betaassi_django.messages import text_of
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.registry.pages import Page, encode_run, in_place_run, overflow_metadata, page_threads
from betaassi_django.registry.root import Root, double, growth_factor

from . import health, lease, notify, registrations
from .apply import Batch, Facts, Outcome, apply_events, wanted
from .backend import (
    PUBLISH_KEY,
    REGISTRY_KEY,
    create_thread,
    delete_threads,
    list_events,
    load_page,
    read_assistant,
    read_metadata,
    tagged_for,
    write_metadata,
)
from .mirror import existing_users, mirror_sessions
from .models import PublishedEvent, Session

logger = logging.getLogger("betaassi_django.publishing")

#: Registries kept as this process last committed them (the latest assistants drained).
KEPT_REGISTRIES = 16
#: A lease the caller took within this share of its length is not renewed again before the first batch.
RENEW_AFTER = 0.1
#: The columns a new outcome rewrites in an event's record (``processed_at``: now).
RECORDED = ["assistant_id", "op", "session_id", "status", "reason", "processed_at"]


def describe(exc: BaseException) -> str:
    """One line for the failure record and the admin."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class QueueDrainer:
    """Applies one assistant's pending events at a time (``drain``), under a lease its caller holds.
    ``seen``: the events the current or last drain processed (kept when it fails midway)."""

    def __init__(self, api: openai.OpenAI, *, holder: str, batch_size: int, lease_seconds: float) -> None:
        self.api, self.holder, self.batch_size, self.lease_seconds = api, holder, batch_size, lease_seconds
        self.seen = 0
        #: When the caller took the lease for the next drain (``time.monotonic()``).
        self.leased_at = float("-inf")
        self._verdicts: dict[str, dict] = {}
        self._created: list[str] = []
        #: Registry thread id -> (root, pages) as this process last committed them.
        self._registries: dict[str, tuple[Root, list[Page]]] = {}

    def drain(self, assistant, state=None) -> int:
        metadata = assistant.metadata or {}
        self._verdicts: dict[str, dict] = {}
        # The registry as this processor last committed it is kept (for the 16 latest assistants): when the
        # root still says what it wrote, the pages are as it wrote them (pages change only under the lease, and
        # every commit moves the root's hwm), so a drain reads 1 thread, not every page (1,287 at 100,000).
        registries = self._registries
        registry_id = metadata[REGISTRY_KEY]
        kept = registries.pop(registry_id, None)
        root = Root.from_metadata(registry_id, read_metadata(self.api, registry_id))
        if kept is not None and kept[0].to_metadata() == root.to_metadata() and not (
                state is not None and (state.orphans or state.pending)):
            root, pages = kept
        else:
            pages = [load_page(self.api, page_id) for page_id in root.page_ids]
        self._repair(assistant.id, state, root, pages)
        registries[registry_id] = (root, pages)
        while len(registries) > KEPT_REGISTRIES:
            registries.pop(next(iter(registries)))
        self.seen = 0
        while True:
            listed = list_events(self.api, metadata[PUBLISH_KEY], after=root.hwm, limit=self.batch_size)
            messages = list(listed.data)
            # A backlog is applied up to 10 lists at a time: a registry page a batch changes is written once for
            # all of its events (at 100,000 sessions most batches touch most pages).
            while listed.has_more and len(messages) < 10 * self.batch_size:
                listed = list_events(self.api, metadata[PUBLISH_KEY], after=messages[-1].id, limit=self.batch_size)
                messages += listed.data
            events = [(m.id, text_of(m)) for m in messages]
            carried = {m.id for m in messages if registrations.carries_verdict(m)}
            if not events:
                return self.seen
            if not self._renewed(assistant.id):
                logger.warning("lost the lease of %s; stopping", assistant.id)
                return self.seen
            registries.pop(registry_id, None)  # changed in memory from here until committed
            now = int(datetime.datetime.now(tz=datetime.UTC).timestamp())
            facts = self._facts(assistant, events)
            self._created: list[str] = []  # threads this batch creates: orphans until its commit names them
            batch = apply_events(root, pages, events, now, facts)
            old_threads: list[str] = []
            factor = growth_factor(root, pages)
            if not root.key or factor > 1:  # grow, or give an old-layout registry its key
                old_threads = [thread for page in pages for thread in page_threads(page)]
                pages = double(root, pages, lambda: self._new_page(assistant.id), factor=factor)
                for page in pages:
                    page.applied = root.hwm
                batch.changed = set(range(len(pages)))
            # Everything before the root write is safe to redo: assistant.set values are absolute.
            for outcome, name, value in batch.settings:
                self._set_attr(assistant, outcome, name, value)
            registrations.apply(self.api, assistant.id, metadata[PUBLISH_KEY], batch.consumers)
            registrations.write_verdicts(self.api, metadata[PUBLISH_KEY], batch.outcomes, carried)
            health.add_orphans(assistant.id, old_threads)
            pending = self._pending(assistant.id, batch, root, pages)
            health.set_pending(assistant.id, pending)  # written by the next attempt if this one dies committed
            replaced = self._commit(assistant.id, root, pages, batch)
            registries[registry_id] = (root, pages)
            health.drop_orphans(assistant.id, self._created)
            if old_threads:  # a grown table's old pages go before the batch is recorded: a reader that kept the
                delete_threads(self.api, old_threads)  # old root finds them gone once wait() returns
                health.drop_orphans(assistant.id, old_threads)
            self._record(assistant.id, pending)
            self._clean_up(assistant.id, replaced, batch, facts)
            notify.broadcast(assistant.id, [
                {"event_id": o.event_id, "op": o.op, "session_id": o.session_id, "status": o.status}
                for o in batch.outcomes])
            self.seen += len(events)
            if not listed.has_more and not notify.announced(assistant.id):
                # The list reached the end, and no wake-up announced an event since the serving processor took
                # its wake-ups: one published meanwhile is announced by its hint or wake-up, for the next cycle.
                return self.seen

    def _renewed(self, assistant_id: str) -> bool:
        """Renew the lease before a batch; False when it is lost. The drain's first batch needs none when the
        caller took the lease just before (within a tenth of its length): that write was its renewal."""
        taken, self.leased_at = self.leased_at, float("-inf")  # every later batch renews
        if time.monotonic() - taken < self.lease_seconds * RENEW_AFTER:
            return True
        return lease.acquire(assistant_id, self.holder, self.lease_seconds)

    def _repair(self, assistant_id: str, state, root: Root, pages: list[Page]) -> None:
        """After a failed attempt: delete the threads it left unreferenced, write the records it committed."""
        if state is None:
            return
        if state.orphans:
            referenced = {root.thread_id, *(t for page in pages for t in page_threads(page)),
                          *(r.get("t") for page in pages for r in page.sessions.values())}
            doomed = [t for t in state.orphans if t not in referenced]
            delete_threads(self.api, doomed)
            health.drop_orphans(assistant_id, state.orphans)
            logger.info("assistant %s: deleted %d thread(s) a failed commit left behind", assistant_id, len(doomed))
        if state.pending:
            if state.pending.get("hwm") == root.hwm:  # committed, then the process died: write what it held
                self._record(assistant_id, state.pending)
            else:  # not committed: its events are read again after the root's high water mark; an event its
                # pages already hold replays, and keeps the verdict it had then
                self._verdicts = {o["event_id"]: o for o in state.pending["outcomes"]}
                health.set_pending(assistant_id, None)

    def _facts(self, assistant, events: list[tuple[str, str]]) -> Facts:
        """Which named owners exist, how each named thread is tagged (one query, one read per thread), and the
        operator's limits (the assistant class's allowed models, sessions per owner: ``quotas``)."""
        owners, thread_ids, chooses_model = wanted(events)
        threads: dict[str, dict] = {}
        for thread_id in sorted(thread_ids):
            with contextlib.suppress(openai.NotFoundError, openai.BadRequestError):  # absent: tagged for no one
                threads[thread_id] = dict(read_metadata(self.api, thread_id))
        users = existing_users(owners)
        # A model is judged against the assistant as the backend has it now: the sweep's copy may predate a
        # change made since (by another deployment, or before this processor took the lease).
        model = read_assistant(self.api, assistant.id).model if chooses_model else assistant.model
        limits = quotas.event_limits(_assistant_class(assistant), assistant.id, model, users, Session.objects)
        return Facts(assistant.id, users, threads, **limits)

    def _new_page(self, assistant_id: str) -> Page:
        page = Page(create_thread(self.api, Page("").to_metadata()))
        health.add_orphans(assistant_id, [page.thread_id])  # unreferenced until the root names it
        self._created.append(page.thread_id)
        return page

    def _commit(self, assistant_id: str, root: Root, pages: list[Page], batch: Batch) -> list[str]:
        """The changed buckets (new overflow pages, then the head), then the root: the high water mark moves
        last. Returns the overflow threads the heads no longer name (to delete once committed)."""
        replaced: list[str] = []
        laid_out = []  # (page, directory): every changed bucket's new runs are created first
        for index in sorted(batch.changed):
            page = pages[index]
            runs = page.runs()
            encoded_runs = [encode_run(run) for run in runs]
            at = in_place_run(page, encoded_runs, [min(run) for run in runs]) if page.directory else None
            if at is not None:  # one run changed, the directory stays: rewrite that run's thread, not the head
                thread_id = page.directory[at][1]
                write_metadata(self.api, thread_id, overflow_metadata(encoded_runs[at], applied=page.applied))
                page.stored_runs = {e: t for e, t in page.stored_runs.items() if t != thread_id}
                page.stored_runs[encoded_runs[at]] = thread_id
                continue
            directory = []
            for run, encoded in zip(runs, encoded_runs, strict=True):
                thread_id = page.stored_runs.get(encoded)
                if thread_id is None:
                    thread_id = create_thread(self.api, overflow_metadata(encoded))
                    self._created.append(thread_id)
                    page.stored_runs[encoded] = thread_id
                directory.append((min(run), thread_id))
            kept = {thread_id for _, thread_id in directory}
            replaced += [t for t in {*page.stored_runs.values(), *(t for _, t in page.directory)} if t not in kept]
            laid_out.append((page, directory))
        # One record of the batch's orphans (the new runs, and the runs the heads will no longer name), before
        # any head names or drops them: at 100,000 sessions most batches change most of the 256 buckets.
        health.add_orphans(assistant_id, [*self._created, *replaced])
        for page, directory in laid_out:
            write_metadata(self.api, page.thread_id, page.head_metadata(directory))
            kept = {thread_id for _, thread_id in directory}
            page.directory = directory
            page.stored_runs = {e: t for e, t in page.stored_runs.items() if t in kept}
        write_metadata(self.api, root.thread_id, root.to_metadata())
        return replaced

    def _clean_up(self, assistant_id: str, unreferenced: list[str], batch: Batch, facts: Facts) -> None:
        """After the commit: delete the registry threads it unlinked, and the session threads it let go of
        (each only if its tags say it was made for that session of this assistant)."""
        doomed = list(unreferenced)
        for thread_id, session_id in batch.deleted_threads:
            metadata = facts.threads.get(thread_id) if facts.threads and thread_id in facts.threads else None
            if metadata is None:
                try:
                    metadata = read_metadata(self.api, thread_id)
                except openai.NotFoundError:
                    continue
            if tagged_for(metadata, assistant_id, session_id, legacy=True):
                doomed.append(thread_id)
            else:
                logger.warning("assistant %s: not deleting %s (not tagged for session %s)", assistant_id,
                               thread_id, session_id)
        health.add_orphans(assistant_id, doomed)
        delete_threads(self.api, doomed)
        health.drop_orphans(assistant_id, doomed)

    def _pending(self, assistant_id: str, batch: Batch, root: Root, pages: list[Page]) -> dict:
        """What the local tables must record once this batch is committed: outcomes and mirror rows."""
        touched = {o.session_id for o in batch.outcomes if o.session_id and o.status in ("applied", "replayed")}
        outcomes = [dataclasses.asdict(o) for o in batch.outcomes]
        verdicts = self._verdicts
        outcomes = [verdicts.get(o["event_id"], o) if o["status"] == "replayed" else o for o in outcomes]
        return {"hwm": root.hwm, "outcomes": outcomes,
                "mirror": {sid: pages[root.bucket(sid)].sessions.get(sid) for sid in sorted(touched)}}

    def _record(self, assistant_id: str, pending: dict) -> None:
        """The local event log and Session mirror of a committed batch, in one transaction of a few statements
        whatever the batch's size (one per event and session cost 3 statements per event)."""
        recorded, kept = [], []  # rewritten (update_or_create), or kept as recorded before a crash (replayed)
        for outcome in pending["outcomes"]:
            level = logging.WARNING if outcome["status"] == "rejected" else logging.INFO
            logger.log(level, "event=%s assistant=%s op=%s session=%s status=%s reason=%s", outcome["event_id"],
                       assistant_id, outcome["op"], outcome["session_id"], outcome["status"],
                       outcome["reason"] or "-")
            row = PublishedEvent(event_id=outcome["event_id"], assistant_id=assistant_id, op=outcome["op"],
                                 session_id=outcome["session_id"], status=outcome["status"], reason=outcome["reason"])
            if outcome["status"] == "replayed":  # applied before a crash: keep what was recorded then
                row.status = "applied"
                kept.append(row)
            else:
                recorded.append(row)
        with transaction.atomic():
            if recorded:
                PublishedEvent.objects.bulk_create(recorded, update_conflicts=True, unique_fields=["event_id"],
                                                   update_fields=RECORDED)
            if kept:
                PublishedEvent.objects.bulk_create(kept, ignore_conflicts=True)
            mirror_sessions(assistant_id, pending["mirror"])
            health.set_pending(assistant_id, None)

    def _set_attr(self, assistant, outcome: Outcome, name: str, value) -> None:
        """assistant.set: one of the assistant class's own metadata fields, through its model (the codec and
        the field's checks apply). Anything the event gets wrong rejects it; a backend outage raises."""
        label = (assistant.metadata or {}).get(TYPE_KEY, "")
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            outcome.status, outcome.reason = "rejected", f"assistant type {label!r} is not installed here"
            return
        fields = {f.name: f for f in getattr(model, "metadata_fields", list)() if f.editable}
        if name not in fields:
            outcome.status, outcome.reason = "rejected", f"{model.__name__} has no metadata field {name!r}"
            return
        instance = model.retrieve(assistant.id)
        try:
            setattr(instance, name, fields[name].clean(value, instance))
            instance.save()
        except ValidationError as exc:
            outcome.status, outcome.reason = "rejected", f"{name}: {' '.join(exc.messages)}"[:500]
        except (TypeError, ValueError, OverflowError, openai.BadRequestError) as exc:
            outcome.status, outcome.reason = "rejected", f"{name}: {describe(exc)}"


def _assistant_class(assistant):
    """The installed assistant class the backend assistant's metadata names (None: not installed here)."""
    try:
        return apps.get_model((assistant.metadata or {}).get(TYPE_KEY, ""))
    except (LookupError, ValueError):
        return None
