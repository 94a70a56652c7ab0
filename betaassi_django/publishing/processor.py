"""The publish-queue processor: applies each assistant's events in order, under a lease.

Per batch: one list of the events after the high water mark, then the writes:
every changed bucket (new overflow pages first, then its head, with
``applied``), then the root (with ``hwm``); only then the local bookkeeping
(``PublishedEvent``, ``Session``), so after any failure the local tables hold
what the registry committed. The rules that make this crash-safe live in
:mod:`.apply`; this module does the backend I/O, the local bookkeeping and
the lease.

One assistant's failure never holds up another: ``run_once`` records it
(:mod:`.health`), backs that assistant off and goes on. Anything an event
itself gets wrong is a rejection with its reason, never a failure. Every
``noop`` or ``rejected`` verdict is also written onto the event's message
(before the root), so other deployments and consumers read outcomes from the
backend (:mod:`.registrations`, with the consumer directory). Only assistants
this deployment owns are applied (:mod:`.ownership`); the others are handed to
the ``follower``, when there is one.

Finding the work (``serve``): a wake-up names its assistant, so the woken processor drains that queue only;
between wake-ups a cycle asks one question, the database's publish hints (``notify.hints``: one query, no
backend request), so an idle processor's cost does not grow with the number of assistants. What no hint
announces (another deployment published, or a publisher died before its hint) is found by the full sweep every
``BETAASSI_PUBLISH_SWEEP_SECONDS``: one read per queue, a lease only where the newest event is not one this
process has applied. ``run_once`` (``--once``, the tests) drains every queue, as a sweep without that memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import socket
import threading
import time
import uuid

import openai
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import transaction

from betaassi_django import conf, quotas
from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.registry import (
    Page,
    Root,
    double,
    encode_run,
    growth_factor,
    overflow_metadata,
    page_threads,
)

from . import health, lease, notify, ownership, positions, registrations, retention
from .apply import Batch, Facts, Outcome, apply_events, wanted
from .backend import PUBLISH_KEY, REGISTRY_KEY, delete_threads, load_page, publish_thread, tagged_for
from .mirror import existing_users, mirror_session
from .models import PublishedEvent, Session
from .wake import Waker

logger = logging.getLogger("betaassi_django.publishing")

#: The most of a core a processor's sweeps may take: with many assistants, sweeps are further apart.
SWEEP_SHARE = 0.01
#: Queues a sweep reads between two looks at the wake-ups and hints (which are applied at once, mid-sweep).
SWEEP_INTERLEAVE = 25


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def describe(exc: BaseException) -> str:
    """One line for the failure record and the admin."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class Processor:
    """Drains publish queues. ``run_once()`` processes everything pending and returns the events seen."""

    def __init__(self, *, holder: str | None = None, assistant_ids: list[str] | None = None,
                 batch_size: int = 100, lease_seconds: float = 30.0, follower=None) -> None:
        self.holder = holder or default_holder()
        #: Keeps this deployment's mirror of the assistants another deployment owns (``follower.Follower``).
        self.follower = follower
        self.assistant_ids = assistant_ids
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.api = get_client()
        self.failed: dict[str, str] = {}
        self._done: set[str] = set()
        self._work_cpu = 0.0  # CPU seconds spent draining since the current sweep started
        #: Assistant id -> the newest event this process saw before draining that queue to the end (``sweep``).
        self._applied: dict[str, str] = {}

    # -- discovery ----------------------------------------------------------------

    def assistants(self) -> list[openai.types.beta.Assistant]:
        """Every backend assistant with a publish queue (or the ones asked for; one that cannot be read
        is recorded as failing and skipped)."""
        if not self.assistant_ids:
            return [a for a in self.api.beta.assistants.list(limit=100, order="asc")
                    if (a.metadata or {}).get(PUBLISH_KEY) and (a.metadata or {}).get(REGISTRY_KEY)]
        found = []
        for assistant_id in self.assistant_ids:
            try:
                found.append(self.api.beta.assistants.retrieve(assistant_id))
            except openai.APIError as exc:
                logger.error("cannot read assistant %s: %s", assistant_id, describe(exc))
                self.failed[assistant_id] = health.failed(assistant_id, describe(exc)).last_error
        return found

    def serve(self, interval: float, stop: threading.Event) -> None:
        """Process until ``stop`` is set. Idle, a cycle costs one query (``run_pending``): woken, it drains the
        assistants the wake-ups and hints name; every ``BETAASSI_PUBLISH_SWEEP_SECONDS`` (and at the start) it
        sweeps every assistant (``sweep``). Cycles come every ``interval`` seconds, or sooner when woken or
        when the follower waits for another deployment to apply an event published here."""
        waker = Waker()
        next_sweep = 0.0  # the first cycle is a sweep: whatever was published while no processor ran
        first = True  # its cost is not a sweep's (imports, connections, a full drain of every queue)
        while not stop.is_set():
            notify.local_wake.clear()
            woken = notify.take_woken()
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + conf.get().publish_sweep_seconds  # if the sweep fails
                    next_sweep = time.monotonic() + self._swept(conf.get().publish_sweep_seconds, first=first)
                    first = False
                else:
                    self.run_pending(woken)
            except Exception:  # the backend is down or a database hiccup: log it, keep serving
                logger.exception("processing failed; retrying in %ss", interval)
            waker.wait(self.follower.interval(interval) if self.follower is not None else interval)

    def _swept(self, period: float, *, first: bool = False) -> float:
        """Sweep; the seconds until the next: ``period``, or longer when the sweep's own reads (its drains and
        follows not counted: they are work) would cost more than ``SWEEP_SHARE`` of a core, so that an idle
        processor's cost stays bounded whatever the number of assistants."""
        start, self._work_cpu = time.thread_time(), 0.0
        self.sweep()
        spent = max(0.0, time.thread_time() - start - self._work_cpu)
        wait = period if first else max(period, spent / SWEEP_SHARE)
        logger.log(logging.INFO if wait > period else logging.DEBUG,
                   "swept %d queue(s) in %.2fs of CPU; next sweep in %.0fs (%.0f%% of a core at most)",
                   len(self._applied), spent, wait, 100 * SWEEP_SHARE)
        return wait

    def run_once(self, *, force: bool = False) -> int:
        """Every assistant's pending events; one that fails is recorded and backed off (``force``: tried
        even inside its back-off), the others go on."""
        self.failed: dict[str, str] = {}  # this pass's failures: assistant id -> the error
        assistants = self.assistants()
        return self._run(assistants, health.states([a.id for a in assistants]), force=force)

    def run_pending(self, woken: set[str] | frozenset[str] = frozenset()) -> int:
        """One cycle between sweeps: only the assistants a wake-up in this process or a hint in the database
        names (one query: ``notify.hints``), and those the follower watches. Idle, no backend request."""
        self.failed = {}
        hinted = notify.hints(self.assistant_ids)
        wanted = set(hinted) | set(woken) | (self.follower.watching() if self.follower is not None else set())
        if self.assistant_ids:
            wanted &= set(self.assistant_ids)
        if not wanted:
            return 0
        if hinted and self.follower is not None:
            self.follower.hinted()  # one may be another deployment's assistant: watch for its owner's verdict
        known = health.states(sorted(wanted))
        assistants = []
        for assistant_id in sorted(wanted):
            if not health.due(known.get(assistant_id)):
                continue  # inside its back-off: its hints stay for the attempt after
            try:
                assistants.append(self.api.beta.assistants.retrieve(assistant_id))
            except openai.NotFoundError:  # deleted: nothing left to apply
                if assistant_id in hinted:
                    notify.clear_hints(assistant_id, hinted[assistant_id])
            except openai.APIError as exc:
                logger.error("cannot read assistant %s: %s", assistant_id, describe(exc))
                self.failed[assistant_id] = health.failed(assistant_id, describe(exc)).last_error
        seen = self._run([a for a in assistants if (a.metadata or {}).get(PUBLISH_KEY)], known)
        self._clear(hinted)
        return seen

    def sweep(self) -> int:
        """Every assistant (one list): what no wake-up or hint announced (events published by another deployment,
        or by a process that died before its hint) is applied within a sweep. A queue whose newest event this
        process has applied costs one read and no lease."""
        self.failed = {}
        hinted = notify.hints(self.assistant_ids)
        assistants = self.assistants()
        known = health.states([a.id for a in assistants])
        newest: dict[str, str] = {}
        due = []
        for index, assistant in enumerate(assistants):
            if index % SWEEP_INTERLEAVE == SWEEP_INTERLEAVE - 1:  # a long sweep: the announced events meanwhile
                self.run_pending(notify.take_woken())
            if ownership.owned_here(assistant.metadata) and health.due(known.get(assistant.id)):
                try:
                    newest[assistant.id] = positions.newest(self.api, assistant.metadata[PUBLISH_KEY])
                except openai.APIError:
                    pass  # processed as before; its drain records the failure
                else:
                    if newest[assistant.id] == self._applied.get(assistant.id) and assistant.id not in hinted:
                        continue
            due.append(assistant)
        seen = self._run(due, known, newest=newest)
        self._clear(hinted)
        return seen

    def _clear(self, hinted: dict[str, int]) -> None:
        for assistant_id in self._done & set(hinted):
            notify.clear_hints(assistant_id, hinted[assistant_id])

    def _run(self, assistants: list, known: dict, *, force: bool = False, newest: dict[str, str] | None = None) -> int:
        """Drain (or follow) each of ``assistants``; one that fails is recorded and backed off, the others go on.
        ``self._done``: those drained to the end under this process's lease (their hints may go); with
        ``newest`` (read before the drain), what this process now knows it has applied."""
        seen = 0
        self._done: set[str] = set()
        for assistant in assistants:
            if not force and not health.due(known.get(assistant.id)):
                continue
            if not ownership.owned_here(assistant.metadata):
                started = time.thread_time()
                recorded = self._follow(assistant, known.get(assistant.id))
                if recorded is not None:
                    self._done.add(assistant.id)
                if recorded:  # work; a follow that found nothing is part of the sweep's idle cost
                    self._work_cpu += time.thread_time() - started
                continue
            if not lease.acquire(assistant.id, self.holder, self.lease_seconds):
                continue
            logger.debug("lease acquired assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
            self.seen = 0
            started = time.thread_time()
            try:
                self.drain(assistant, known.get(assistant.id))
                retention.maybe_prune(self.api, assistant)  # BETAASSI_QUEUE_PRUNE_SECONDS, under the lease
            except Exception as exc:  # this assistant only: record it, back off, go on with the others
                state = health.failed(assistant.id, describe(exc))
                self.failed[assistant.id] = state.last_error
                logger.exception("assistant %s failed (%d in a row); retrying in %.0fs", assistant.id,
                                 state.failures, health.backoff(state.failures))
            else:
                if assistant.id in known and known[assistant.id].failures:
                    health.succeeded(assistant.id)
                if lease.holds(assistant.id, self.holder):  # not lost midway: drained to the end
                    self._done.add(assistant.id)
                    if newest is not None and assistant.id in newest:  # "" (an empty queue) too
                        self._applied[assistant.id] = newest[assistant.id]
            finally:
                self._work_cpu += time.thread_time() - started
                seen += self.seen
                logger.debug("lease released assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
                lease.release(assistant.id, self.holder)
        return seen

    def _follow(self, assistant, state) -> int | None:
        """An assistant another deployment owns: never applied here; the follower (if any) mirrors it. The events
        recorded; None when following it failed."""
        if self.follower is None:
            return 0
        try:
            recorded = self.follower.follow(assistant)
        except Exception as exc:  # as a failed drain: this assistant only
            state = health.failed(assistant.id, describe(exc))
            self.failed[assistant.id] = state.last_error
            logger.exception("following assistant %s failed (%d in a row); retrying in %.0fs", assistant.id,
                             state.failures, health.backoff(state.failures))
            return None
        if state is not None and state.failures:
            health.succeeded(assistant.id)
        return recorded

    # -- one assistant ----------------------------------------------------------

    def drain(self, assistant, state=None) -> int:
        metadata = assistant.metadata or {}
        self._verdicts: dict[str, dict] = {}
        # The registry as this processor last committed it is kept (for the 16 latest assistants): when the
        # root still says what it wrote, the pages are as it wrote them (pages change only under the lease, and
        # every commit moves the root's hwm), so a drain reads 1 thread, not every page (1,287 at 100,000).
        registries = self.__dict__.setdefault("_registries", {})
        registry_id = metadata[REGISTRY_KEY]
        kept = registries.pop(registry_id, None)
        root = Root.from_metadata(registry_id, self.api.beta.threads.retrieve(registry_id).metadata or {})
        if kept is not None and kept[0].to_metadata() == root.to_metadata() and not (
                state is not None and (state.orphans or state.pending)):
            root, pages = kept
        else:
            pages = [load_page(self.api, page_id) for page_id in root.page_ids]
        self._repair(assistant.id, state, root, pages)
        registries[registry_id] = (root, pages)
        while len(registries) > 16:
            registries.pop(next(iter(registries)))
        self.seen = 0
        while True:
            listed = publish_thread(self.api, metadata[PUBLISH_KEY], after=root.hwm, limit=self.batch_size)
            messages = list(listed.data)
            # A backlog is applied up to 10 lists at a time: a registry page a batch changes is written once for
            # all of its events (at 100,000 sessions most batches touch most pages).
            while listed.has_more and len(messages) < 10 * self.batch_size:
                listed = publish_thread(self.api, metadata[PUBLISH_KEY], after=messages[-1].id, limit=self.batch_size)
                messages += listed.data
            events = [(m.id, text_of(m)) for m in messages]
            carried = {m.id for m in messages if registrations.carries_verdict(m)}
            if not events:
                return self.seen
            if not lease.acquire(assistant.id, self.holder, self.lease_seconds):
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
        owners, thread_ids = wanted(events)
        threads: dict[str, dict] = {}
        for thread_id in sorted(thread_ids):
            with contextlib.suppress(openai.NotFoundError, openai.BadRequestError):  # absent: tagged for no one
                threads[thread_id] = dict(self.api.beta.threads.retrieve(thread_id).metadata or {})
        users = existing_users(owners)
        limits = quotas.event_limits(_assistant_class(assistant), assistant.id, assistant.model, users,
                                     Session.objects)
        return Facts(assistant.id, users, threads, **limits)

    def _new_page(self, assistant_id: str) -> Page:
        page = Page(self.api.beta.threads.create(metadata=Page("").to_metadata()).id)
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
            directory = []
            for run in page.runs():
                encoded = encode_run(run)
                thread_id = page.stored_runs.get(encoded)
                if thread_id is None:
                    thread_id = self.api.beta.threads.create(metadata=overflow_metadata(encoded)).id
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
            self.api.beta.threads.update(page.thread_id, metadata=page.head_metadata(directory))
            kept = {thread_id for _, thread_id in directory}
            page.directory = directory
            page.stored_runs = {e: t for e, t in page.stored_runs.items() if t in kept}
        self.api.beta.threads.update(root.thread_id, metadata=root.to_metadata())
        return replaced

    def _clean_up(self, assistant_id: str, unreferenced: list[str], batch: Batch, facts: Facts) -> None:
        """After the commit: delete the registry threads it unlinked, and the session threads it let go of
        (each only if its tags say it was made for that session of this assistant)."""
        doomed = list(unreferenced)
        for thread_id, session_id in batch.deleted_threads:
            metadata = facts.threads.get(thread_id) if facts.threads and thread_id in facts.threads else None
            if metadata is None:
                try:
                    metadata = self.api.beta.threads.retrieve(thread_id).metadata or {}
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
        verdicts = getattr(self, "_verdicts", {})
        outcomes = [verdicts.get(o["event_id"], o) if o["status"] == "replayed" else o for o in outcomes]
        return {"hwm": root.hwm, "outcomes": outcomes,
                "mirror": {sid: pages[root.bucket(sid)].sessions.get(sid) for sid in sorted(touched)}}

    def _record(self, assistant_id: str, pending: dict) -> None:
        """The local event log and Session mirror of a committed batch, in one transaction."""
        with transaction.atomic():
            for outcome in pending["outcomes"]:
                level = logging.WARNING if outcome["status"] == "rejected" else logging.INFO
                logger.log(level, "event=%s assistant=%s op=%s session=%s status=%s reason=%s", outcome["event_id"],
                           assistant_id, outcome["op"], outcome["session_id"], outcome["status"],
                           outcome["reason"] or "-")
                fields = {"assistant_id": assistant_id, "op": outcome["op"], "session_id": outcome["session_id"],
                          "status": outcome["status"], "reason": outcome["reason"]}
                if outcome["status"] == "replayed":  # applied before a crash: keep what was recorded then
                    fields.update(status="applied")
                    PublishedEvent.objects.get_or_create(event_id=outcome["event_id"], defaults=fields)
                else:
                    PublishedEvent.objects.update_or_create(event_id=outcome["event_id"], defaults=fields)
            for session_id, record in pending["mirror"].items():
                mirror_session(assistant_id, session_id, record)
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
