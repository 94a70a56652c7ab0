"""The local ``Session`` mirror of registry records, shared by the processor and the follower (which mirrors
assistants another deployment owns)."""

from __future__ import annotations

import datetime

from django.contrib.auth import get_user_model
from django.db import connection

from .apply import session_from_record
from .models import Session


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
    if record is None:
        Session.objects.filter(assistant_id=assistant_id, session_id=session_id).delete()
        return
    data = session_from_record(session_id, record)
    owner = data["owner"] if isinstance(data["owner"], int) and not isinstance(data["owner"], bool) else None
    owner_id = owner if owner is not None and existing_users({owner}) else None
    Session.objects.update_or_create(assistant_id=assistant_id, session_id=session_id, defaults={
        "owner_id": owner_id, "kind": data["kind"], "context_messages": data["context_messages"],
        "model": data["model"], "thread_id": data["thread_id"], "revision": data["revision"],
        "created_at": datetime.datetime.fromtimestamp(data["created_at"], tz=datetime.UTC)})
