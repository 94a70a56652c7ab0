"""What an operator asks of a publish queue: how far behind it is, apply it now, re-read it from the backend,
and where each of its consumers stands.

The backend is the source of truth: the pending events are the publish
thread's messages after the registry root's high water mark, read there (two
calls), never guessed from local tables; a consumer's position is its
``StreamThread``'s metadata, found through the directory on the publish thread.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import openai
from django.db.models import Count
from django.utils import timezone

from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.registry.root import Root

from . import directory
from .backend import load_registry, publish_thread, queue_ids
from .events import Event, Rejected, read
from .models import ConsumerFailure, ConsumerLease, PublishedEvent, PublishLease, PublishState, Session
from .registrations import STREAM_TYPE, VERDICT_KEYS

#: Pending events read at most per status (a queue further behind shows as "at least" this many).
PENDING_LIMIT = 1000
#: The processor's verdict on an event it did not apply, on the event's message (docs/events.md).
_, VERDICT_KEY, REASON_KEY = VERDICT_KEYS


@dataclass
class QueueStatus:
    hwm: str
    pending: list[tuple[str, Event | Rejected]] = field(default_factory=list)  # oldest first
    complete: bool = True  # False when more than PENDING_LIMIT events are pending

    @property
    def lag(self) -> int:
        return len(self.pending)

    def pending_by_session(self) -> dict[str, list[str]]:
        """Session id -> the ops still pending for it, in order."""
        ops: dict[str, list[str]] = {}
        for _, event in self.pending:
            if isinstance(event, Event) and event.session_id:
                ops.setdefault(event.session_id, []).append(event.op)
        return ops


def queue_status(assistant, *, api: openai.OpenAI | None = None, limit: int = PENDING_LIMIT) -> QueueStatus:
    """The high water mark and the events after it: one root read, then the events 100 per call."""
    api = api or get_client()
    publish_id, root_id = queue_ids(assistant)
    root = Root.from_metadata(root_id, api.beta.threads.retrieve(root_id).metadata or {})
    status = QueueStatus(root.hwm)
    for message in publish_thread(api, publish_id, after=root.hwm):
        if len(status.pending) == limit:
            status.complete = False
            break
        status.pending.append((message.id, read(text_of(message))))
    return status


@dataclass(frozen=True)
class QueueMessage:
    """One message of a publish thread as the queue page lists it."""

    id: str
    created_at: int
    body: str
    event: Event | Rejected
    verdict: str = ""  # the owner's recorded outcome on the message (noop/rejected), when it set one
    reason: str = ""


def recent_events(assistant, *, api: openai.OpenAI | None = None, limit: int = 50,
                  after: str | None = None) -> tuple[list[QueueMessage], bool]:
    """One page of the publish thread, newest first: ``(messages, has_more)``."""
    api = api or get_client()
    publish_id, _ = queue_ids(assistant)
    page = publish_thread(api, publish_id, after=after, order="desc", limit=limit)
    rows = []
    for message in page.data:
        body, metadata = text_of(message), message.metadata or {}
        rows.append(QueueMessage(message.id, message.created_at, body, read(body),
                                 metadata.get(VERDICT_KEY, ""), metadata.get(REASON_KEY, "")))
    return rows, page.has_more


# -- consumers ------------------------------------------------------------------------------------------

#: Events counted at most after a consumer's position: one list call per consumer (more shows as "100+").
CONSUMER_LAG_LIMIT = 100


@dataclass
class ConsumerStatus:
    """One registered consumer of a queue: its position (from the backend) and this database's records of it."""

    name: str
    thread_id: str
    hwm: str = ""  # the last event it committed; "" none yet
    lag: int | None = None  # events after hwm, at most ``CONSUMER_LAG_LIMIT``; None when unknown
    complete: bool = True  # False when more than the limit are after it
    problem: str = ""  # why the position is unknown or was lost
    holder: str = ""  # the process holding its lease here (unexpired), "" when free
    expires_at: datetime.datetime | None = None
    failures: int = 0  # ConsumerFailure rows recorded here

    @property
    def lag_text(self) -> str:
        return "unknown" if self.lag is None else f"{self.lag}{'' if self.complete else '+'}"


def consumer_statuses(assistant, *, api: openai.OpenAI | None = None,
                      limit: int = CONSUMER_LAG_LIMIT) -> list[ConsumerStatus]:
    """The queue's registered consumers by name: one directory read, then two reads per consumer (its thread,
    one page of events after its position), and two local queries for all of them."""
    api = api or get_client()
    publish_id, _ = queue_ids(assistant)
    rows = [ConsumerStatus(name, thread_id) for name, thread_id in sorted(directory.read(api, publish_id).items())]
    for row in rows:
        _read_position(api, assistant.id, publish_id, row, limit)
    now = timezone.now()
    leases = {lease.consumer: lease for lease in ConsumerLease.objects.filter(
        assistant_id=assistant.id, consumer__in=[r.name for r in rows], expires_at__gte=now)}
    failures = dict(ConsumerFailure.objects.filter(assistant_id=assistant.id).values_list("consumer").annotate(
        n=Count("pk")).values_list("consumer", "n"))
    for row in rows:
        lease = leases.get(row.name)
        row.holder, row.expires_at = (lease.holder, lease.expires_at) if lease else ("", None)
        row.failures = failures.get(row.name, 0)
    return rows


def _read_position(api: openai.OpenAI, assistant_id: str, publish_id: str, row: ConsumerStatus,
                   limit: int) -> None:
    try:
        metadata: dict[str, Any] = api.beta.threads.retrieve(row.thread_id).metadata or {}
    except openai.NotFoundError:
        row.problem = "its position thread is gone"
        return
    if (metadata.get(TYPE_KEY), metadata.get("consumer"), metadata.get("assistant_id")) != (
            STREAM_TYPE, row.name, assistant_id):
        row.problem = "its thread is not this consumer's position on this assistant"
        return
    row.hwm = metadata.get("hwm", "")
    try:
        page = publish_thread(api, publish_id, after=row.hwm or None, limit=limit)
    except openai.BadRequestError:  # invalid_cursor: retention removed the event it stopped at
        row.problem = "its position was removed by retention; it restarts from the oldest retained event"
        page = publish_thread(api, publish_id, limit=limit)
    row.lag, row.complete = len(page.data), not page.has_more


def recent_failures(assistant_id: str, limit: int = 20) -> tuple[list[ConsumerFailure], int]:
    """The newest ``limit`` events consumers of this assistant gave up on, and how many are recorded."""
    rows = ConsumerFailure.objects.filter(assistant_id=assistant_id)
    return list(rows.order_by("-failed_at", "-pk")[:limit]), rows.count()


def apply_now(assistant, *, holder: str | None = None) -> int:
    """Run the processor once for this assistant, in this process; returns the events it processed.

    0 while another processor holds the assistant's lease (that one applies them). ``ValueError`` when the
    assistant has no publish queue. A failure is recorded (``failure()`` says it), never raised; an
    assistant in its back-off is tried anyway (the operator asked).
    """
    from .processor import Processor

    queue_ids(assistant)
    return Processor(assistant_ids=[assistant.id], holder=holder).run_once(force=True)


def failure(assistant_id: str):
    """The assistant's recorded processing failure (a ``PublishState`` with ``failures > 0``), or None."""
    from .health import failing

    return failing([assistant_id]).get(assistant_id)


def sync_sessions(assistant, *, api: openai.OpenAI | None = None) -> tuple[int, int]:
    """Rewrite the assistant's ``Session`` mirror from its registry; returns (sessions, mirror rows dropped)."""
    from django.db import transaction

    from .mirror import mirror_session

    api = api or get_client()
    _, root_id = queue_ids(assistant)
    _, pages = load_registry(api, root_id)
    records = {sid: record for page in pages for sid, record in page.sessions.items()}
    with transaction.atomic():
        for session_id, record in records.items():
            mirror_session(assistant.id, session_id, record)
        dropped, _ = Session.objects.filter(assistant_id=assistant.id).exclude(session_id__in=records).delete()
    return len(records), dropped


def forget_assistant(assistant_id: str) -> None:
    """Drop the local bookkeeping of an assistant that is gone from the backend (sessions, event log, lease)."""
    PublishState.objects.filter(assistant_id=assistant_id).delete()
    Session.objects.filter(assistant_id=assistant_id).delete()
    PublishedEvent.objects.filter(assistant_id=assistant_id).delete()
    PublishLease.objects.filter(assistant_id=assistant_id).delete()
    ConsumerLease.objects.filter(assistant_id=assistant_id).delete()
    ConsumerFailure.objects.filter(assistant_id=assistant_id).delete()
