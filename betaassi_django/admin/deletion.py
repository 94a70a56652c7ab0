"""Deleting an assistant deletes its sessions: the confirmation page lists them and needs delete permission.

Sessions point at their assistant by id, not by a foreign key, so Django's
collector does not find them; this adds them to what ``get_deleted_objects``
returns exactly as Django lists related objects (a linked line each, a count,
and the sessions' verbose name among the permissions needed when the user
may not delete sessions, which makes the delete a 403 as Django's is).
"""

from __future__ import annotations

from django.contrib.auth import get_permission_codename
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import capfirst

from betaassi_django.models import Session

from .common import admin_url


def session_line(session: Session) -> str:
    """A session as Django's deletion page shows a related object: linked to its change page when it has one."""
    url = admin_url(Session, "change", session.pk)
    name = capfirst(Session._meta.verbose_name)
    return format_html('{}: <a href="{}">{}</a>', name, url, session) if url else f"{name}: {session}"


def with_sessions(objs, request: HttpRequest, collect) -> tuple[list, dict, set, list]:
    """``collect`` (Django's ``get_deleted_objects``) per assistant, with each one's sessions under it."""
    to_delete, model_count, perms_needed, protected = [], {}, set(), []
    opts = Session._meta
    may_delete = request.user.has_perm(f"{opts.app_label}.{get_permission_codename('delete', opts)}")
    for obj in objs:
        listed, counts, needed, guarded = collect([obj], request)
        sessions = list(Session.objects.filter(assistant_id=obj.pk).order_by("session_id"))
        if sessions:
            if len(listed) == 1:
                listed.append([])
            listed[1].extend(session_line(session) for session in sessions)
            counts[opts.verbose_name_plural] = counts.get(opts.verbose_name_plural, 0) + len(sessions)
            if not may_delete:
                needed.add(opts.verbose_name)
        to_delete.extend(listed)
        for name, count in counts.items():
            model_count[name] = model_count.get(name, 0) + count
        perms_needed |= needed
        protected.extend(guarded)
    return to_delete, model_count, perms_needed, protected
