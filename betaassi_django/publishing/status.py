"""What an operator asks of a publish queue: how far behind it is, apply it now, re-read it from the backend.

The backend is the source of truth: the pending events are the publish
thread's messages after the registry root's high water mark, read there (two
calls), never guessed from local tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import openai

from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.registry import Root

from .backend import load_registry, publish_thread, queue_ids
from .events import Event, Rejected, read
from .models import PublishedEvent, PublishLease, PublishState, Session

#: Pending events read at most per status (a queue further behind shows as "at least" this many).
PENDING_LIMIT = 1000


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


def recent_events(assistant, *, api: openai.OpenAI | None = None, limit: int = 50, after: str | None = None):
    """One page of the publish thread, newest first: ``(messages, has_more)``; each is
    ``(event_id, created_at, body, Event or Rejected)``."""
    api = api or get_client()
    publish_id, _ = queue_ids(assistant)
    page = publish_thread(api, publish_id, after=after, order="desc", limit=limit)
    rows = []
    for message in page.data:
        body = text_of(message)
        rows.append((message.id, message.created_at, body, read(body)))
    return rows, page.has_more


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

    from .processor import mirror_session

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
