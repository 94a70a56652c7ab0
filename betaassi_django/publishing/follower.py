"""The mirror follower: this deployment's view of the assistants another deployment owns.

When several Django projects share one backend, only the owner's processors apply an assistant's queue
(``ownership``). Every other deployment's processor follows it instead, as the durable consumer
``betaassi.mirror.<deployment>`` reading only what the owner applied (``applied_only``): each event's outcome,
read from the owner's verdicts, goes into the local ``PublishedEvent`` log (so ``wait=True`` returns here too),
and the sessions it touched are re-read from the registry into the local ``Session`` mirror.

Registration does not block the processor: the follower publishes ``consumer.register`` once (its position starts
at the root's high water mark, after a full copy of the registry into the mirror) and looks for the directory
entry on later passes. The processor follows each such assistant at its sweep, and at every cycle the assistants a
wake-up or hint names; woken by a publish in this process, the follower asks it to poll fast (``interval``) and
to follow at every cycle those with events published but not yet applied by the owner (``watching``).
docs/deployment.md.
"""

from __future__ import annotations

import logging
import time

import openai
from django.apps import apps
from django.db import transaction

from betaassi_django.client import get_client
from betaassi_django.metadata import TYPE_KEY

from . import consumer, directory, lease, notify, ownership, positions, queue_event
from .backend import find_record, load_registry, queue_ids
from .mirror import mirror_session
from .models import PublishedEvent, Session

logger = logging.getLogger("betaassi_django.publishing")

PREFIX = "betaassi.mirror."
#: Seconds between polls while this process's events wait for the owner; for at most ``EAGER_SECONDS``.
FAST_POLL = 0.1
EAGER_SECONDS = 30.0
#: Seconds before a refused registration is tried again.
RETRY_SECONDS = 300.0


def name() -> str:
    """This deployment's follower: one consumer name per deployment, shared by all its processes."""
    return PREFIX + ownership.deployment()


class Follower:
    """Keeps the local mirror of the assistants another deployment owns; ``follow(assistant)`` is one pass."""

    def __init__(self, holder: str, *, lease_seconds: float = 30.0) -> None:
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.name = name()
        self._consumers: dict[str, consumer.Consumer] = {}
        self._registering: dict[str, positions.Registration] = {}
        self._retry_at: dict[str, float] = {}  # assistant id -> when to register again after a refusal
        self._held: set[str] = set()  # assistants whose follower lease this process took
        self._recorded: dict[str, str] = {}  # assistant id -> the last event this process recorded
        self._waiting: set[str] = set()  # assistants with events published but not applied by their owner
        self._eager_since: float | None = None  # a local publish woke us: watch for its outcome
        notify.subscribe(self._woken)

    def _woken(self) -> None:
        self._eager_since = time.monotonic()

    def hinted(self) -> None:
        """A publish of this project reached the processor as a hint (another process, no wake-up across): as
        woken."""
        self._woken()

    @property
    def api(self) -> openai.OpenAI:
        return get_client()

    @property
    def eager(self) -> bool:
        """Within ``EAGER_SECONDS`` of a wake-up in this process (a publish here)."""
        return self._eager_since is not None and time.monotonic() - self._eager_since < EAGER_SECONDS

    def watching(self) -> set[str]:
        """The assistants to follow at every cycle, not only at the processor's sweep: those with events published
        here that their owner has not applied yet, while ``eager``."""
        return set(self._waiting) if self.eager else set()

    def interval(self, default: float) -> float:
        """How long the processor may wait before the next pass: ``FAST_POLL`` while an event published here
        waits for its owner, else ``default``."""
        return min(default, FAST_POLL) if self.eager and self._waiting else default

    def follow(self, assistant) -> int:
        """Record what the owner applied since the last pass (events recorded); registers first if needed."""
        if not lease.acquire(assistant.id, self.holder, self.lease_seconds, consumer=self.name):
            return 0  # another process of this deployment follows it
        self._held.add(assistant.id)
        follower = self._consumers.get(assistant.id)
        if follower is None:
            if not self._registered(assistant):
                if assistant.id in self._registering:  # its registration waits for the owner, as an event does
                    self._waiting.add(assistant.id)
                return 0
            follower = self._consumers[assistant.id] = consumer.AppConsumer(
                self.name, assistant_ids=[assistant.id], applied_only=True, holder=self.holder,
                lease_seconds=self.lease_seconds)
            self._recorded[assistant.id] = follower.positions().get(assistant.id, "")
        recorded = 0
        while batch := follower.poll():
            if follower.behind:  # retention removed its position: what it missed is in the registry only
                follower.behind.clear()
                self._mirror_all(assistant)
            self._record(assistant, batch)
            follower.commit()
            self._recorded[assistant.id] = batch[-1].id
            recorded += len(batch)
        if self.eager:
            self._watch(assistant)
        else:
            self._waiting.discard(assistant.id)
        return recorded

    def close(self) -> None:
        """Release the leases (on shutdown)."""
        notify.unsubscribe(self._woken)
        for follower in self._consumers.values():
            follower.close()
        for assistant_id in self._held - set(self._consumers):
            lease.release(assistant_id, self.holder, consumer=self.name)
        self._consumers.clear()
        self._held.clear()

    # -- registration ------------------------------------------------------------------------------------

    def _registered(self, assistant) -> bool:
        """Whether the directory names this deployment's follower; publishes ``consumer.register`` once."""
        api = self.api
        publish_id, root_id = queue_ids(assistant)
        pending = self._registering.get(assistant.id)
        if pending is not None:
            try:
                known = positions.settle(api, assistant, self.name, pending)
            except positions.Refused as exc:
                logger.warning("follower %s not registered on %s: %s; trying again in %.0fs", self.name,
                               assistant.id, exc, RETRY_SECONDS)
                del self._registering[assistant.id]
                self._retry_at[assistant.id] = time.monotonic() + RETRY_SECONDS
                return False
            if known:
                del self._registering[assistant.id]
            return bool(known)
        if directory.read(api, publish_id).get(self.name):
            return True
        if time.monotonic() < self._retry_at.get(assistant.id, 0):
            return False  # refused a moment ago (a full directory): not one registration per pass
        # Start where the owner stands, and copy everything the registry holds up to there into the mirror.
        hwm = positions.root_hwm(api, root_id)
        self._mirror_all(assistant)
        self._registering[assistant.id] = positions.begin(assistant, self.name, hwm)
        logger.info("follower %s registering on %s (owned by %s) from %s", self.name, assistant.id,
                    ownership.owner_of(assistant.metadata), hwm or "the start")
        return False

    def _mirror_all(self, assistant) -> None:
        """The local ``Session`` mirror of this assistant as its registry holds it now."""
        _, root_id = queue_ids(assistant)
        _, pages = load_registry(self.api, root_id)
        records = {sid: record for page in pages for sid, record in page.sessions.items()}
        with transaction.atomic():
            Session.objects.filter(assistant_id=assistant.id).exclude(session_id__in=list(records)).delete()
            for session_id, record in sorted(records.items()):
                mirror_session(assistant.id, session_id, record)

    # -- one batch ---------------------------------------------------------------------------------------

    def _record(self, assistant, batch: list[queue_event.QueueEvent]) -> None:
        """The owner's outcomes into ``PublishedEvent``, the touched sessions re-read into the mirror."""
        _, root_id = queue_ids(assistant)
        outcomes = [{"event_id": event.id, "op": event.op or "", "session_id": event.session_id,
                     "status": event.status or "applied", "reason": event.rejected or event.reason or ""}
                    for event in batch]
        touched = sorted({o["session_id"] for o in outcomes if o["session_id"] and o["status"] == "applied"})
        records = {sid: find_record(self.api, root_id, sid) for sid in touched}
        if any(o["op"] == "assistant.set" and o["status"] == "applied" for o in outcomes):
            self._refresh_assistant(assistant)
        with transaction.atomic():
            for outcome in outcomes:
                logger.info("followed event=%s assistant=%s op=%s session=%s status=%s reason=%s",
                            outcome["event_id"], assistant.id, outcome["op"], outcome["session_id"],
                            outcome["status"], outcome["reason"] or "-")
                PublishedEvent.objects.update_or_create(event_id=outcome["event_id"], defaults={
                    "assistant_id": assistant.id, "op": outcome["op"], "session_id": outcome["session_id"],
                    "status": outcome["status"], "reason": outcome["reason"]})
            for session_id, record in records.items():
                mirror_session(assistant.id, session_id, record)
        notify.broadcast(assistant.id, [{k: o[k] for k in ("event_id", "op", "session_id", "status")}
                                        for o in outcomes])

    def _refresh_assistant(self, assistant) -> None:
        """The assistant's own local row, after the owner applied an ``assistant.set``."""
        try:
            model = apps.get_model((assistant.metadata or {}).get(TYPE_KEY, ""))
        except (LookupError, ValueError):
            return  # its class is not installed here: no local row to refresh
        if hasattr(model, "retrieve"):
            model.retrieve(assistant.id)

    def _watch(self, assistant) -> None:
        """Whether events published here are not recorded yet (the newest event is past the follower's position):
        poll fast if so. Against the position, not the root's hwm: the owner may apply an event between this
        pass's poll and this read (one read)."""
        publish_id, _ = queue_ids(assistant)
        newest = positions.newest(self.api, publish_id)
        if newest and newest != self._recorded.get(assistant.id, ""):
            self._waiting.add(assistant.id)
        else:
            self._waiting.discard(assistant.id)

