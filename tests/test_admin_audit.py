"""The audit trail: every admin action and custom view that changes state writes a ``LogEntry``.

Who (the user), what (the object, or the model for "Sync all"), when (action_time) and a change message
(the sentence the operator was shown); each object's history page lists them.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from betaassi_django.client import get_client
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin import support_form
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def entries() -> list[tuple]:
    """(user, model, object id, repr, flag, message) of each entry, oldest first."""
    return [(e.user.username, e.content_type.model_class(), e.object_id, e.object_repr, e.action_flag,
             e.get_change_message()) for e in LogEntry.objects.order_by("pk")]


def setting(staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    return desk


@pytest.mark.parametrize("how", ["queue page", "action"])
def test_apply_now_and_sync_are_logged(staff, how):
    desk = setting(staff)
    web = client_of(staff)
    started = timezone.now()
    if how == "queue page":
        web.post(admin_path(Support, "queue", desk.id), {"apply": "1"})
        web.post(admin_path(Support, "queue", desk.id), {"sync": "1"})
    else:
        for action in ("apply_pending_now", "sync_from_backend"):
            web.post(admin_path(Support, "changelist"), {"action": action, "_selected_action": [desk.id]})
    assert entries() == [
        ("root", Support, desk.id, "Desk", CHANGE, "Desk: 1 event(s) processed; nothing is pending."),
        ("root", Support, desk.id, "Desk", CHANGE, "Desk synced from the backend: 1 session(s)."),
    ]
    assert all(e.action_time >= started for e in LogEntry.objects.all())
    history = web.get(admin_path(Support, "history", desk.id))
    assert [e.get_change_message() for e in history.context["action_list"]] == [
        "Desk: 1 event(s) processed; nothing is pending.", "Desk synced from the backend: 1 session(s)."]


def test_syncing_an_assistant_gone_from_the_backend_logs_its_deletion(staff):
    desk = setting(staff)
    get_client().beta.assistants.delete(desk.id)
    client_of(staff).post(admin_path(Support, "queue", desk.id), {"sync": "1"})
    assert entries() == [("root", Support, desk.id, "Desk", DELETION,
                          "Desk is gone from the backend: its mirror and sessions were removed.")]


def test_sync_all_is_logged_once_and_in_each_assistants_history(staff):
    desk = setting(staff)
    kitchen_less = Support.objects.create(name="Other")
    web = client_of(staff)
    web.post(admin_path(Support, "sync"))
    text = ("Synced from the backend (testapp.Support synced: 2); sessions of 2 assistant(s) re-read, "
            "0 session row(s) of vanished assistants removed.")
    found = entries()
    assert found[0] == ("root", Support, None, "Sync all from backend", CHANGE, text)
    assert sorted(found[1:]) == sorted([
        ("root", Support, a.id, a.name, CHANGE, f"Sync all from backend: {text}") for a in (desk, kitchen_less)])
    history = web.get(admin_path(Support, "history", desk.id))
    assert [e.get_change_message() for e in history.context["action_list"]] == [f"Sync all from backend: {text}"]


def test_sessions_published_from_the_session_admin_are_logged(staff):
    desk = setting(staff)
    Processor().run_once()
    session = Session.objects.get()
    web = client_of(staff)
    web.post(admin_path(Session, "add"), {"assistant": desk.id, "session_id": "s-2", "owner": staff.pk,
                                          "kind": "default"})
    web.post(admin_path(Session, "change", session.pk), {"kind": "oneshot"})
    web.post(admin_path(Session, "delete", session.pk), {"post": "yes"})
    web.post(admin_path(Session, "changelist"), {"action": "delete_selected", "_selected_action": [session.pk],
                                                 "post": "yes"})
    key = str(session.pk)
    assert entries() == [
        ("root", Session, None, f"s-2 on {desk.id} (published)", ADDITION, "Added."),
        ("root", Session, key, "s-1 (oneshot)", CHANGE, "Changed kind."),
        ("root", Session, key, "s-1 (default)", DELETION, ""),
        ("root", Session, key, "s-1 (default)", DELETION, ""),
    ]


def test_sessions_published_from_the_inline_are_logged_on_the_assistant(staff):
    desk = setting(staff)
    Processor().run_once()
    session = Session.objects.get()
    client_of(staff).post(admin_path(Support, "change", desk.id), support_form(name="Desk", **{
        "sessions-TOTAL_FORMS": "2", "sessions-INITIAL_FORMS": "1",
        "sessions-0-id": str(session.pk), "sessions-0-kind": "oneshot",
        "sessions-1-session_id": "s-2", "sessions-1-owner": str(staff.pk), "sessions-1-kind": "default"}))
    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.object_id, entry.action_flag, entry.content_type) == (
        staff, desk.id, CHANGE, ContentType.objects.get_for_model(Support))
    # (The form also posts the assistant's own fields; what Django says of them comes first.)
    assert entry.get_change_message().endswith(
        "Added session \u201cs-2 (default)\u201d. Changed kind for session \u201cs-1 (oneshot)\u201d.")
