"""Each assistant's queue health: failures and their back-off, threads to clean up, records to write.

A batch that fails (the backend refuses or cannot be reached, a registry thread is broken) fails for that
assistant only: it is logged, recorded on its ``PublishState`` and retried after an exponential back-off
(1 s, 2 s, 4 s ... at most 5 minutes), while the processor goes on with the others. The record is what the
admin shows as a warning.
"""

from __future__ import annotations

import datetime

from django.db.models import F
from django.utils import timezone

from .models import PublishState

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
MAX_ERROR_LENGTH = 2000


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row."""
    return min(BACKOFF_FIRST * 2 ** min(max(failures - 1, 0), 20), BACKOFF_MAX)


def states(assistant_ids: list[str] | None = None) -> dict[str, PublishState]:
    rows = PublishState.objects.all()
    if assistant_ids is not None:
        rows = rows.filter(assistant_id__in=assistant_ids)
    return {row.assistant_id: row for row in rows}


def due(state: PublishState | None) -> bool:
    """Whether the assistant may be attempted now (not inside a back-off)."""
    return state is None or state.retry_at is None or state.retry_at <= timezone.now()


def failed(assistant_id: str, error: str) -> PublishState:
    """Record one more failure in a row; the next attempt waits ``backoff(failures)``."""
    state, _ = PublishState.objects.get_or_create(assistant_id=assistant_id)
    state.failures += 1
    state.last_error = error[:MAX_ERROR_LENGTH]
    state.failed_at = timezone.now()
    state.retry_at = state.failed_at + datetime.timedelta(seconds=backoff(state.failures))
    state.save(update_fields=["failures", "last_error", "failed_at", "retry_at"])
    return state


def succeeded(assistant_id: str) -> None:
    PublishState.objects.filter(assistant_id=assistant_id, failures__gt=0).update(
        failures=0, last_error="", retry_at=None)


def add_orphans(assistant_id: str, thread_ids: list[str]) -> None:
    """Threads that may end unreferenced if the commit under way fails: deleted by the next attempt."""
    if not thread_ids:
        return
    state, _ = PublishState.objects.get_or_create(assistant_id=assistant_id)
    state.orphans = [*state.orphans, *(t for t in thread_ids if t not in state.orphans)]
    state.save(update_fields=["orphans"])


def drop_orphans(assistant_id: str, thread_ids: list[str]) -> None:
    if not thread_ids:
        return
    state = PublishState.objects.filter(assistant_id=assistant_id).first()
    if state is not None and state.orphans:
        gone = set(thread_ids)
        state.orphans = [t for t in state.orphans if t not in gone]
        state.save(update_fields=["orphans"])


def set_pending(assistant_id: str, pending: dict | None) -> None:
    """The local records of the batch about to be committed (None: none)."""
    if pending is not None:  # one UPDATE once the row exists (update_or_create: a transaction of 4 statements)
        if not PublishState.objects.filter(assistant_id=assistant_id).update(pending=pending):
            PublishState.objects.update_or_create(assistant_id=assistant_id, defaults={"pending": pending})
    else:
        PublishState.objects.filter(assistant_id=assistant_id, pending__isnull=False).update(pending=None)


def failing(assistant_ids: list[str]) -> dict[str, PublishState]:
    """The assistants among these whose last attempt failed (for the admin)."""
    return {row.assistant_id: row for row in PublishState.objects.filter(
        assistant_id__in=assistant_ids, failures__gt=0).order_by(F("failed_at").desc(nulls_last=True))}
