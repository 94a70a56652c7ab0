"""Sessions in the admin: each change publishes an event; rows show pending until the processor applies it."""

from __future__ import annotations

import json
import re
import threading

import pytest

from betaassi_django.client import get_client
from betaassi_django.models import Session
from betaassi_django.publishing import notify
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.test_admin import shown, support_form
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def published(assistant) -> list[dict]:
    """The event bodies on the assistant's publish thread, oldest first, read through the SDK."""
    messages = get_client().beta.threads.messages.list(assistant.metadata[PUBLISH_KEY], order="asc", limit=100)
    return [json.loads(m.content[0].text.value) for m in messages.data]


def inline(**rows) -> dict:
    """The sessions inline of the assistant form: ``initial`` existing rows, then new ones."""
    data = {"sessions-MIN_NUM_FORMS": "0", "sessions-MAX_NUM_FORMS": "1000"}
    forms = rows.get("forms", [])
    data["sessions-TOTAL_FORMS"] = str(len(forms))
    data["sessions-INITIAL_FORMS"] = str(rows.get("initial", 0))
    for index, form in enumerate(forms):
        data.update({f"sessions-{index}-{name}": value for name, value in form.items()})
    return data


def test_add_a_session_from_the_session_admin(web, staff):
    desk = Support.objects.create(name="Desk")
    form = web.get("/admin/betaassi_django/session/add/")
    assert form.status_code == 200
    assert (desk.id, "Desk (testapp.Support)") in form.context["adminform"].form.fields["assistant"].choices

    response = web.post("/admin/betaassi_django/session/add/", {
        "assistant": desk.id, "session_id": "s-1", "owner": staff.pk, "kind": "manyshots", "context_messages": "3",
        "model": "gpt-4o-mini"})
    assert response.status_code == 302
    assert response["Location"] == admin_path(Session, "changelist", assistant=desk.id)
    [event] = published(desk)
    assert {k: event[k] for k in ("v", "op", "session_id")} == {"v": 1, "op": "session.create", "session_id": "s-1"}
    assert {k: event["args"][k] for k in ("owner", "kind", "context_messages", "model")} == {
        "owner": staff.pk, "kind": "manyshots", "context_messages": 3, "model": "gpt-4o-mini"}
    assert not Session.objects.exists()  # published, not written
    [message] = shown(response)
    assert message.startswith("Published session.create for s-1 (event msg_")

    assert web.get("/admin/betaassi_django/session/").context["cl"].pending_creations == []  # no row of Desk
    listing = web.get(response["Location"])
    assert [(p["session_id"], p["assistant"], p["kind"], p["context_messages"]) for p in
            listing.context["cl"].pending_creations] == [("s-1", "Desk", "manyshots", 3)]
    assert "Published, not applied yet" in listing.text

    Processor().run_once()
    listing = web.get("/admin/betaassi_django/session/")
    assert listing.context["cl"].pending_creations == []
    [row] = listing.context["cl"].result_list
    assert (row.session_id, row.owner, row.kind, row.context_messages, row.model, row.status_text) == (
        "s-1", staff, "manyshots", 3, "gpt-4o-mini", "applied")
    assert f'href="/chat/{desk.id}/s-1/"' in listing.text
    assert f'href="{admin_path(Support, "change", desk.id)}"' in listing.text


def test_session_form_errors_publish_nothing(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("taken", owner=staff, wait=False)
    Processor().run_once()
    cases = [
        ({"session_id": "bad id!", "kind": "default"}, "session_id"),
        ({"session_id": "taken", "kind": "default"}, "session_id"),
        ({"session_id": "s", "kind": "manyshots"}, "context_messages"),
        ({"session_id": "s", "kind": "manyshots", "context_messages": "1001"}, "context_messages"),
        ({"session_id": "s", "kind": "sometimes"}, "kind"),
        ({"session_id": "s", "kind": "default", "model": "m" * 101}, "model"),
    ]
    for values, field in cases:
        response = web.post("/admin/betaassi_django/session/add/", {"assistant": desk.id, "owner": staff.pk, **values})
        assert response.status_code == 200, values
        assert list(response.context["adminform"].form.errors) == [field], values
    assert [e["op"] for e in published(desk)] == ["session.create"]


def test_edit_and_delete_publish_and_show_pending(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    desk.sessions.create("s-2", owner=staff)
    Processor().run_once()
    one, two = Session.objects.order_by("session_id")

    page = web.get(admin_path(Session, "change", one.pk))
    assert page.status_code == 200 and "applied" in page.text
    response = web.post(admin_path(Session, "change", one.pk),
                        {"kind": "oneshot", "context_messages": "", "model": "gpt-4o"})
    assert response.status_code == 302
    assert shown(response)[0].startswith("Published session.update for s-1 (event msg_")
    assert published(desk)[-1] == {"v": 1, "op": "session.update", "session_id": "s-1",
                                   "args": {"kind": "oneshot", "context_messages": None, "model": "gpt-4o"}}
    assert Session.objects.get(pk=one.pk).kind == "default"  # the mirror waits for the processor

    response = web.post(admin_path(Session, "delete", two.pk), {"post": "yes"})
    assert response.status_code == 302
    assert shown(response)[0].startswith("Published session.delete for s-2 (event msg_")
    listing = web.get("/admin/betaassi_django/session/")
    assert {r.session_id: r.status_text for r in listing.context["cl"].result_list} == {
        "s-1": "pending: update", "s-2": "pending: delete"}

    Processor().run_once()
    listing = web.get("/admin/betaassi_django/session/")
    assert [(r.session_id, r.kind, r.model, r.status_text) for r in listing.context["cl"].result_list] == [
        ("s-1", "oneshot", "gpt-4o", "applied")]


def test_bulk_delete_publishes_one_event_per_session(web, staff):
    desk = Support.objects.create(name="Desk")
    for sid in ("a", "b", "c"):
        desk.sessions.create(sid, owner=staff)
    Processor().run_once()
    chosen = list(Session.objects.filter(session_id__in=["a", "b"]).values_list("pk", flat=True))
    action = {"action": "delete_selected", "_selected_action": chosen}
    assert "Are you sure" in web.post("/admin/betaassi_django/session/", action).text
    response = web.post("/admin/betaassi_django/session/", {**action, "post": "yes"})
    assert response.status_code == 302
    assert shown(response) == ["Published session.delete for 2 session(s); they go once the processor applies them."]
    assert [(e["op"], e["session_id"]) for e in published(desk)[3:]] == [("session.delete", "a"),
                                                                         ("session.delete", "b")]
    Processor().run_once()
    assert list(Session.objects.values_list("session_id", flat=True)) == ["c"]


def test_search_and_filters(web, staff):
    desk, other = Support.objects.create(name="Desk"), Support.objects.create(name="Other")
    desk.sessions.create("alpha", owner=staff, kind="oneshot")
    other.sessions.create("beta", owner=staff)
    Processor().run_once()

    def ids(**query):
        return [r.session_id for r in web.get("/admin/betaassi_django/session/", query).context["cl"].result_list]

    assert ids(q="alp") == ["alpha"]
    assert ids(q="root") == ["alpha", "beta"] or ids(q="root") == ["beta", "alpha"]
    assert ids(kind="oneshot") == ["alpha"]
    assert ids(assistant=other.id) == ["beta"]


def test_the_inline_on_the_assistant_page_publishes(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("keep", owner=staff)
    desk.sessions.create("drop", owner=staff)
    Processor().run_once()
    drop, keep = Session.objects.order_by("session_id")

    rows = [
        {"id": str(drop.pk), "kind": "default", "context_messages": "", "model": "", "DELETE": "on"},
        {"id": str(keep.pk), "kind": "manyshots", "context_messages": "4", "model": ""},
        {"session_id": "new-one", "owner": str(staff.pk), "kind": "oneshot", "context_messages": "", "model": "m-1"},
    ]
    response = web.post(admin_path(Support, "change", desk.id),
                        {**support_form(name="Desk"), **inline(initial=2, forms=rows)})
    assert response.status_code == 302, response.context and response.context["errors"]
    ops = [(e["op"], e["session_id"], {k: v for k, v in e["args"].items() if k in ("kind", "context_messages")})
           for e in published(desk)[2:]]
    assert ops == [("session.delete", "drop", {}), ("session.update", "keep", {"kind": "manyshots",
                                                                               "context_messages": 4}),
                   ("session.create", "new-one", {"kind": "oneshot"})]
    page = web.get(admin_path(Support, "change", desk.id))
    formset = page.context["inline_admin_formsets"][0].formset
    assert [(f.instance.session_id, f.instance.status_text) for f in formset.initial_forms] == [
        ("drop", "pending: delete"), ("keep", "pending: update")]
    assert [p["session_id"] for p in formset.pending_creations()] == ["new-one"]

    Processor().run_once()
    page = web.get(admin_path(Support, "change", desk.id))
    formset = page.context["inline_admin_formsets"][0].formset
    assert [(f.instance.session_id, f.instance.kind, f.instance.status_text) for f in formset.initial_forms] == [
        ("keep", "manyshots", "applied"), ("new-one", "oneshot", "applied")]


def test_adding_an_assistant_with_sessions_in_one_form(web, staff):
    rows = [{"session_id": "first", "owner": str(staff.pk), "kind": "default", "context_messages": "", "model": ""}]
    response = web.post("/admin/testapp/support/add/", {**support_form(name="New desk"), **inline(forms=rows)})
    assert response.status_code == 302
    desk = Support.objects.get()
    assert [(e["op"], e["session_id"]) for e in published(desk)] == [("session.create", "first")]
    Processor().run_once()
    assert desk.sessions.get("first").owner == staff


def test_a_serving_processor_is_woken_when_the_admin_form_commits(web, staff):
    """The admin publishes inside its transaction; the wake-up waits for the commit, so the processor sees the event.

    (On SQLite the admin's write lock also holds the processor back until the commit; on PostgreSQL only the
    wake-up on commit keeps it from reading the queue too early and then sleeping a minute.)
    """
    desk = Support.objects.create(name="Desk")
    stop = threading.Event()
    thread = threading.Thread(target=Processor().serve, args=(60.0, stop), daemon=True)  # polls once a minute
    thread.start()
    try:
        response = web.post("/admin/betaassi_django/session/add/", {
            "assistant": desk.id, "session_id": "woken", "owner": staff.pk, "kind": "default"})
        event_id = re.search(r"\(event (msg_\w+)\)", shown(response)[0])[1]
        assert desk.sessions.wait(event_id, timeout=10).status == "applied"
        assert Session.objects.get().session_id == "woken"
    finally:
        stop.set()
        notify.local_wake.set()
        thread.join(10)


def test_the_inline_shows_a_bounded_number_of_sessions(web, staff, monkeypatch):
    from betaassi_django.admin.session_inline import SessionFormSet

    monkeypatch.setattr(SessionFormSet, "limit", 2)
    desk = Support.objects.create(name="Desk")
    for sid in ("c", "a", "b"):
        desk.sessions.create(sid, owner=staff)
    Processor().run_once()
    page = web.get(admin_path(Support, "change", desk.id))
    formset = page.context["inline_admin_formsets"][0].formset
    assert [f.instance.session_id for f in formset.initial_forms] == ["a", "b"]
    assert "Showing the first 2 of 3 sessions (by id)." in page.text
    assert f'href="{admin_path(Session, "changelist", assistant=desk.id)}"' in page.text

    rows = [{"id": str(Session.objects.get(session_id="a").pk), "kind": "oneshot", "context_messages": "",
             "model": ""},
            {"id": str(Session.objects.get(session_id="b").pk), "kind": "default", "context_messages": "",
             "model": ""}]
    response = web.post(admin_path(Support, "change", desk.id),
                        {**support_form(name="Desk"), **inline(initial=2, forms=rows)})
    assert response.status_code == 302
    assert [(e["op"], e["session_id"]) for e in published(desk)[3:]] == [("session.update", "a")]
