"""The publish-queue processor: finds the queues with work and has each drained in order, under a lease.

Draining one queue (the batches, the registry writes, the local bookkeeping) is :mod:`.drain`'s.
One assistant's failure never holds up another: ``run_once`` records it
(:mod:`.health`), backs that assistant off and goes on. Anything an event
itself gets wrong is a rejection with its reason, never a failure. Only assistants
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

import logging
import os
import socket
import threading
import time
import uuid

import openai

from betaassi_django import conf
from betaassi_django.client import get_client

from . import health, lease, notify, ownership, positions, retention
from .backend import PUBLISH_KEY, REGISTRY_KEY, read_assistant
from .drain import QueueDrainer, describe
from .wake import Waker

logger = logging.getLogger("betaassi_django.publishing")

#: The most of a core a processor's sweeps may take: with many assistants, sweeps are further apart.
SWEEP_SHARE = 0.01
#: Queues a sweep reads between two looks at the wake-ups and hints (which are applied at once, mid-sweep).
SWEEP_INTERLEAVE = 25


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self.queues = QueueDrainer(get_client(), holder=self.holder, batch_size=batch_size,
                                   lease_seconds=lease_seconds)
        self.failed: dict[str, str] = {}
        self._done: set[str] = set()
        self._work_cpu = 0.0  # CPU seconds spent draining since the current sweep started
        #: Assistant id -> the newest event this process saw before draining that queue to the end (``sweep``).
        self._applied: dict[str, str] = {}

    @property
    def api(self) -> openai.OpenAI:
        """The client of the backend: one for finding the work and draining it (set it to count requests)."""
        return self.queues.api

    @api.setter
    def api(self, client: openai.OpenAI) -> None:
        self.queues.api = client

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
                found.append(read_assistant(self.api, assistant_id))
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
                assistants.append(read_assistant(self.api, assistant_id))
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
            self.queues.leased_at = time.monotonic()  # its first batch needs no renewal
            logger.debug("lease acquired assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
            self.queues.seen = 0
            started, drained = time.thread_time(), False
            try:
                self.queues.drain(assistant, known.get(assistant.id))
                retention.maybe_prune(self.api, assistant)  # BETAASSI_QUEUE_PRUNE_SECONDS, under the lease
            except Exception as exc:  # this assistant only: record it, back off, go on with the others
                state = health.failed(assistant.id, describe(exc))
                self.failed[assistant.id] = state.last_error
                logger.exception("assistant %s failed (%d in a row); retrying in %.0fs", assistant.id,
                                 state.failures, health.backoff(state.failures))
            else:
                drained = True
                if assistant.id in known and known[assistant.id].failures:
                    health.succeeded(assistant.id)
            finally:
                self._work_cpu += time.thread_time() - started
                seen += self.queues.seen
                logger.debug("lease released assistant=%s holder=%s t=%.6f", assistant.id, self.holder, time.time())
                held = lease.release(assistant.id, self.holder)  # whether it was held until now
            if drained and held:  # not lost midway: drained to the end
                self._done.add(assistant.id)
                if newest is not None and assistant.id in newest:  # "" (an empty queue) too
                    self._applied[assistant.id] = newest[assistant.id]
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
