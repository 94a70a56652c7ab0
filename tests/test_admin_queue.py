"""The publish-queue page and the two actions: apply pending events now, sync from backend."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from betaassi_django.client import get_client
from betaassi_django.models import PublishedEvent, PublishLease, Session
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin import shown
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_queue_page_shows_each_event_with_its_status(web, staff):
    desk = Support.objects.create(name="Desk")
    api = get_client()
    desk.sessions.create("s-1", owner=staff)
    api.beta.threads.messages.create(desk.metadata[PUBLISH_KEY], role="user", content="not json at all")
    desk.sessions.update("missing", kind="oneshot")  # a no-op: no such session
    Processor().run_once()
    hwm = PublishedEvent.objects.order_by("processed_at").last().event_id
    later = desk.sessions.delete("s-1")  # pending

    page = web.get(admin_path(Support, "queue", desk.id))
    assert page.status_code == 200
    assert (page.context["hwm"], page.context["lag"]) == (hwm, "1")
    assert [(e["op"], e["session_id"], e["status"], e["reason"]) for e in page.context["events"]] == [
        ("session.delete", "s-1", "pending", ""),
        ("session.update", "missing", "applied (no-op)", "no such session"),
        ("?", "", "rejected", "not valid JSON"),
        ("session.create", "s-1", "applied", ""),
    ]
    assert page.context["events"][0]["id"] == later
    assert page.context["events"][2]["body"] == "not json at all"
    for text in (f'<code id="hwm">{hwm}</code>', '<dd id="lag">1</dd>', "Apply pending events now",
                 "Sync from backend"):
        assert text in page.text


def test_the_queue_page_pages_through_older_events(web, staff):
    desk = Support.objects.create(name="Desk")
    for index in range(55):
        desk.sessions.update(f"s-{index}", model="m")
    first = web.get(admin_path(Support, "queue", desk.id))
    assert len(first.context["events"]) == 50 and first.context["lag"] == "55"
    older = web.get(admin_path(Support, "queue", desk.id), {"after": first.context["older"]})
    assert [e["session_id"] for e in older.context["events"]] == [f"s-{i}" for i in (4, 3, 2, 1, 0)]
    assert older.context["older"] is None


def test_apply_now_from_the_queue_page(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    desk.sessions.create("s-2", owner=staff)
    response = web.post(admin_path(Support, "queue", desk.id), {"apply": "1"})
    assert response.status_code == 302 and response["Location"] == admin_path(Support, "queue", desk.id)
    assert shown(response) == ["Desk: 2 event(s) processed; nothing is pending."]
    assert sorted(Session.objects.values_list("session_id", flat=True)) == ["s-1", "s-2"]
    assert [s.session_id for s in desk.sessions.list()] == ["s-1", "s-2"]
    assert not PublishLease.objects.exists()  # released after the run
    assert web.get(admin_path(Support, "queue", desk.id)).context["lag"] == "0"


def test_apply_now_while_another_processor_holds_the_queue(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    from betaassi_django.publishing import lease

    assert lease.acquire(desk.id, "elsewhere:1", 60)
    response = web.post(admin_path(Support, "queue", desk.id), {"apply": "1"})
    assert shown(response) == ["Desk: 0 event(s) processed, 1 still pending (the queue is leased to elsewhere:1)."]
    assert not Session.objects.exists()


def test_apply_now_as_a_changelist_action(web, staff):
    one, two = Support.objects.create(name="One"), Support.objects.create(name="Two")
    one.sessions.create("a", owner=staff)
    two.sessions.create("b", owner=staff)
    response = web.post("/admin/testapp/support/", {"action": "apply_pending_now", "_selected_action": [one.id]})
    assert response.status_code == 302
    assert shown(response) == ["One: 1 event(s) processed; nothing is pending."]
    assert list(Session.objects.values_list("session_id", flat=True)) == ["a"]  # Two was not selected


def test_sync_from_backend_rereads_the_assistant_and_its_sessions(web, staff):
    desk = Support.objects.create(name="Desk", tier=1)
    desk.sessions.create("s-1", owner=staff)
    Processor().run_once()
    api = get_client()
    api.beta.assistants.update(desk.id, name="Renamed elsewhere", metadata={**desk.metadata, "tier": "7"})
    Session.objects.create(assistant_id=desk.id, session_id="stale", created_at="2026-01-01T00:00Z")
    Session.objects.filter(session_id="s-1").delete()

    response = web.post(admin_path(Support, "queue", desk.id), {"sync": "1"})
    assert shown(response) == [
        "Renamed elsewhere synced from the backend: 1 session(s), 1 stale mirror row(s) removed."]
    mirror = Support.objects.get()
    assert (mirror.name, mirror.tier) == ("Renamed elsewhere", 7)
    assert list(Session.objects.values_list("session_id", "owner")) == [("s-1", staff.pk)]


def test_sync_drops_an_assistant_deleted_elsewhere(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    Processor().run_once()
    get_client().beta.assistants.delete(desk.id)
    response = web.post("/admin/testapp/support/", {"action": "sync_from_backend", "_selected_action": [desk.id]})
    assert shown(response) == ["Desk is gone from the backend: its mirror and sessions were removed."]
    assert not Support.objects.exists() and not Session.objects.exists() and not PublishedEvent.objects.exists()


def test_sync_all_mirrors_new_assistants_and_drops_vanished_ones(web, staff):
    api = get_client()
    kept, gone = Support.objects.create(name="Kept"), Support.objects.create(name="Gone")
    kept.sessions.create("s-1", owner=staff)
    gone.sessions.create("s-2", owner=staff)
    Processor().run_once()
    api.beta.assistants.delete(gone.id)
    made_elsewhere = api.beta.assistants.create(model="gpt-4o", name="Elsewhere",
                                                metadata={"betaassi_type": "testapp.Support", "tier": "6"})
    listing = web.get("/admin/testapp/support/")
    assert 'id="sync-all"' in listing.text

    response = web.post("/admin/testapp/support/sync/")
    assert response.status_code == 302 and response["Location"] == "/admin/testapp/support/"
    assert shown(response) == [
        "Synced from the backend (testapp.Support removed: 1, testapp.Support synced: 2); sessions of 2 "
        "assistant(s) re-read, 1 session row(s) of vanished assistants removed."]
    assert sorted(Support.objects.values_list("name", "tier")) == [("Elsewhere", 6), ("Kept", 1)]
    assert Support.objects.get(name="Elsewhere").pk == made_elsewhere.id
    assert list(Session.objects.values_list("session_id", flat=True)) == ["s-1"]
    assert web.get("/admin/testapp/support/sync/").status_code == 403


def test_the_queue_page_needs_staff_the_change_permission_and_csrf(staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s", owner=staff)
    url = admin_path(Support, "queue", desk.id)
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    viewer = get_user_model().objects.create_user("viewer", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_support"))
    page = client_of(viewer).get(url)
    assert page.status_code == 200 and page.context["lag"] == "1" and "Apply pending events now" not in page.text
    assert client_of(viewer).post(url, {"apply": "1"}).status_code == 403
    assert client_of(viewer).post("/admin/testapp/support/sync/").status_code == 403

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.post(url, {"apply": "1"}).status_code == 403
    assert strict.post("/admin/testapp/support/sync/").status_code == 403
    assert not Session.objects.exists()  # nothing was applied


def test_an_assistant_made_outside_betaassi_has_no_queue_and_no_500(web):
    outsider = get_client().beta.assistants.create(model="gpt-4o", name="Outsider",
                                                   metadata={"betaassi_type": "testapp.Support"})
    web.post("/admin/testapp/support/sync/")
    url = admin_path(Support, "queue", outsider.id)
    page = web.get(url)
    assert page.status_code == 200
    assert shown(page)[-1] == ("Outsider has no publish queue (it was made outside betaassi-django), so it has no "
                               "events or sessions.")
    assert shown(web.post(url, {"apply": "1"})) == [shown(page)[-1]]
    assert shown(web.post(url, {"sync": "1"})) == [
        "Outsider synced from the backend; it has no publish queue (it was made outside betaassi-django), so it "
        "has no events or sessions."]
    listing = web.get("/admin/testapp/support/")
    assert [a.queue_lag_text for a in listing.context["cl"].result_list] == ["no queue"]
    assert web.get(admin_path(Support, "change", outsider.id)).status_code == 200
