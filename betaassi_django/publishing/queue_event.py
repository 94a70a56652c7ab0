"""What a durable consumer hands out: ``QueueEvent``, one publish-thread message read without trusting its body.

Its own module because handlers (``consume_queue --handler``, the follower, a project's code) take these events
without needing the consumer's machinery, and ``to_event`` is the one place a message becomes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from betaassi_django.messages import text_of

from .events import Rejected, read
from .registrations import REASON_KEY, STATUS_KEY


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
