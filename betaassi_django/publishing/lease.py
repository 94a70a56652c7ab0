"""Leases: one processor holds an assistant's publish queue at a time."""

from __future__ import annotations

import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .models import PublishLease


def acquire(assistant_id: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease for ``ttl`` seconds; False while another holder's lease runs.

    One conditional UPDATE decides: it succeeds only for the current holder or
    once the lease expired, so two processors can never both succeed.
    """
    now = timezone.now()
    until = now + datetime.timedelta(seconds=ttl)
    taken = PublishLease.objects.filter(Q(holder=holder) | Q(expires_at__lt=now), assistant_id=assistant_id).update(
        holder=holder, expires_at=until)
    if taken:
        return True
    try:
        with transaction.atomic():
            PublishLease.objects.create(assistant_id=assistant_id, holder=holder, expires_at=until)
    except IntegrityError:
        return False  # someone holds it (or created it just now)
    return True


def holds(assistant_id: str, holder: str) -> bool:
    """Whether ``holder`` holds an unexpired lease (check before each backend write)."""
    return PublishLease.objects.filter(assistant_id=assistant_id, holder=holder,
                                       expires_at__gte=timezone.now()).exists()


def release(assistant_id: str, holder: str) -> None:
    """Give the lease up at once (on shutdown), so another processor need not wait for expiry."""
    PublishLease.objects.filter(assistant_id=assistant_id, holder=holder).delete()
