"""The local ``Session`` mirror of registry records, shared by the processor and the follower (which mirrors
assistants another deployment owns)."""

from __future__ import annotations

import datetime

from django.contrib.auth import get_user_model
from django.db import connection

from .apply import session_from_record
from .models import Session

#: The mirror's columns a registry record sets (``touched_at``, the last turn, is the turns' own).
MIRRORED = ["owner", "kind", "context_messages", "model", "thread_id", "revision", "created_at"]


def existing_users(ids: set[int]) -> set[int]:
    """The ids among these that name a user (ids outside the key's range name none)."""
    if not ids:
        return set()
    user = get_user_model()
    low, high = connection.ops.integer_field_range(user._meta.pk.get_internal_type())
    usable = [i for i in ids if (low is None or i >= low) and (high is None or i <= high)]
    return set(user.objects.filter(pk__in=usable).values_list("pk", flat=True)) if usable else set()


def mirror_session(assistant_id: str, session_id: str, record: dict | None) -> None:
    """Write one registry record into the ``Session`` mirror (None: the session is gone)."""
    mirror_sessions(assistant_id, {session_id: record})


def _owner(data: dict) -> int | None:
    owner = data["owner"]
    return owner if isinstance(owner, int) and not isinstance(owner, bool) else None


def mirror_sessions(assistant_id: str, records: dict[str, dict | None]) -> None:
    """Write a batch's registry records into the ``Session`` mirror (None: the session is gone) in at most three
    statements, whatever their number: the owners that exist, one delete, one insert-or-update (a batch of 100
    events cost 200 statements one session at a time)."""
    gone = [session_id for session_id, record in records.items() if record is None]
    kept = {session_id: session_from_record(session_id, r) for session_id, r in records.items() if r is not None}
    if gone:
        Session.objects.filter(assistant_id=assistant_id, session_id__in=gone).delete()
    if not kept:
        return
    users = existing_users({o for o in map(_owner, kept.values()) if o is not None})
    rows = [Session(
        assistant_id=assistant_id, session_id=session_id,
        owner_id=_owner(data) if _owner(data) in users else None, kind=data["kind"],
        context_messages=data["context_messages"], model=data["model"], thread_id=data["thread_id"],
        revision=data["revision"], created_at=datetime.datetime.fromtimestamp(data["created_at"], tz=datetime.UTC),
    ) for session_id, data in kept.items()]
    Session.objects.bulk_create(rows, update_conflicts=True, unique_fields=["assistant_id", "session_id"],
                                update_fields=MIRRORED)
