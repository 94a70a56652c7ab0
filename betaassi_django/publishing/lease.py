"""Leases: one processor holds an assistant's publish queue at a time, and one process a named consumer's.

A lease is a row with a holder and an expiry, taken and renewed with one conditional UPDATE: it succeeds only
for the current holder or once the lease expired, so two processes can never both hold it, on every database
(SQLite included), not only where ``select_for_update`` exists. The processor's leases are ``PublishLease``
rows (``consumer=None``); a consumer's are ``ConsumerLease`` rows, one per consumer name and assistant.
"""

from __future__ import annotations

import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .models import ConsumerLease, PublishLease


def _rows(assistant_id: str, consumer: str | None):
    if consumer is None:
        return PublishLease.objects.filter(assistant_id=assistant_id)
    return ConsumerLease.objects.filter(consumer=consumer, assistant_id=assistant_id)


def acquire(assistant_id: str, holder: str, ttl: float, *, consumer: str | None = None) -> bool:
    """Take or renew the lease for ``ttl`` seconds; False while another holder's lease runs."""
    now = timezone.now()
    until = now + datetime.timedelta(seconds=ttl)
    if _rows(assistant_id, consumer).filter(Q(holder=holder) | Q(expires_at__lt=now)).update(
            holder=holder, expires_at=until):
        return True
    model, extra = (PublishLease, {}) if consumer is None else (ConsumerLease, {"consumer": consumer})
    try:
        with transaction.atomic():
            model.objects.create(assistant_id=assistant_id, holder=holder, expires_at=until, **extra)
    except IntegrityError:
        return False  # someone holds it (or created it just now)
    return True


def holds(assistant_id: str, holder: str, *, consumer: str | None = None) -> bool:
    """Whether ``holder`` holds an unexpired lease (check before each backend write)."""
    return _rows(assistant_id, consumer).filter(holder=holder, expires_at__gte=timezone.now()).exists()


def release(assistant_id: str, holder: str, *, consumer: str | None = None) -> bool:
    """Give the lease up at once (on shutdown), so another process need not wait for expiry. Whether ``holder``
    held it unexpired until now (``holds`` and the release in one statement; an expired row of its own is
    deleted by a second)."""
    rows = _rows(assistant_id, consumer).filter(holder=holder)
    if rows.filter(expires_at__gte=timezone.now()).delete()[0]:
        return True
    rows.delete()
    return False
