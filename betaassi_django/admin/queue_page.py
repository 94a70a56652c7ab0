"""What the publish-queue page shows: the queue's state, one page of its events, its consumers and their failures.

Everything but the local records (event outcomes, leases, consumer failures) is read from the backend on each
request: the root's high water mark and the pending events, one page of the publish thread, the consumer
directory and each consumer's position (``publishing.status``).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.http import HttpRequest

from betaassi_django.models import PublishedEvent, PublishLease
from betaassi_django.publishing import status
from betaassi_django.publishing.events import Event

EVENTS_PER_PAGE = 50
#: Characters of an application event's data shown in its row (the whole body is on the backend).
DATA_PREVIEW = 100
APP_EVENT = "app.event"
SHOWN_STATUS = {"replayed": "applied", "noop": "applied (no-op)"}


def preview(value: Any, limit: int = DATA_PREVIEW) -> str:
    """A JSON value on one line, cut to ``limit`` characters."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def event_row(message: status.QueueMessage, pending: bool, record: PublishedEvent | None, complete: bool) -> dict:
    """One row of the events table: what the event is and what became of it."""
    event = message.event
    op = event.op if isinstance(event, Event) else ""
    if pending:
        shown, reason = "pending", ""
    elif record is not None:
        shown, reason = SHOWN_STATUS.get(record.status, record.status), record.reason
    elif message.verdict:  # the owner's verdict, written on the message (another deployment applied it)
        shown, reason = SHOWN_STATUS.get(message.verdict, message.verdict), message.reason
    elif not complete:
        shown, reason = "pending", ""
    else:
        shown = "passed" if op == APP_EVENT else "applied"
        reason = "processed before this database recorded events"
    app = op == APP_EVENT
    args = event.args if isinstance(event, Event) else {}
    return {"id": message.id, "created_at": datetime.datetime.fromtimestamp(message.created_at, tz=datetime.UTC),
            "op": op or "?", "type": str(args.get("type", "")) if app else "",
            "session_id": (event.session_id if isinstance(event, Event) else None) or "",
            "args": "" if app or not op else json.dumps(args, sort_keys=True),
            "data": preview(args.get("data")) if app else "",
            "body": message.body if not op else "", "status": shown, "reason": reason}


def queue_context(request: HttpRequest, assistant) -> dict:
    """The page's context; raises ``openai.APIError`` when the backend fails, ``ValueError`` with no queue."""
    state = status.queue_status(assistant)
    rows, has_more = status.recent_events(assistant, limit=EVENTS_PER_PAGE, after=request.GET.get("after") or None)
    pending = {event_id for event_id, _ in state.pending}
    records = PublishedEvent.objects.in_bulk([r.id for r in rows])
    events = [event_row(r, r.id in pending, records.get(r.id), state.complete) for r in rows]
    return {"hwm": state.hwm or "(none yet)", "lag": f"{state.lag}{'' if state.complete else '+'}",
            "events": events, "older": rows[-1].id if has_more and rows else None,
            "lease": PublishLease.objects.filter(assistant_id=assistant.id).first(), "newest_first": True,
            "consumers": status.consumer_statuses(assistant)}


def local_context(assistant) -> dict:
    """What this database alone records: the events consumers gave up on (shown when the backend fails too)."""
    failures, count = status.recent_failures(assistant.id)
    return {"consumer_failures": failures, "consumer_failure_count": count}
