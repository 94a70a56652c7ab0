"""The admin's audit trail: every action and custom view that changes state writes a ``LogEntry``.

Django logs its own add / change / delete views; the queue page's buttons, the
"apply now" and "sync" actions and "Sync all from backend" log here, with the
sentence the operator was shown as the change message, so an object's history
page says who applied or synced it, when, and what came of it.
"""

from __future__ import annotations

from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest

__all__ = ["CHANGE", "DELETION", "log_action", "log_each"]


def log_action(request: HttpRequest, model, object_id, shown: str, message: str, flag: int = CHANGE) -> LogEntry:
    """One entry: ``request.user`` did ``message`` to the object (``object_id`` None: to the model as a whole)."""
    return LogEntry.objects.create(
        user_id=request.user.pk, content_type_id=ContentType.objects.get_for_model(model, for_concrete_model=False).pk,
        object_id=None if object_id is None else str(object_id), object_repr=shown[:200], action_flag=flag,
        change_message=message)


def log_each(request: HttpRequest, objects, message: str) -> None:
    """A change entry for each object (one insert), e.g. every assistant "Sync all from backend" re-read."""
    entries = [LogEntry(user_id=request.user.pk,
                        content_type_id=ContentType.objects.get_for_model(type(obj), for_concrete_model=False).pk,
                        object_id=str(obj.pk), object_repr=str(obj.name or obj.pk)[:200], action_flag=CHANGE,
                        change_message=message) for obj in objects]
    LogEntry.objects.bulk_create(entries)
