"""The assistant admin through Django's test client, on the embedded backend; state read back with the SDK."""

from __future__ import annotations

import html
import json

import openai
import pytest
from django.contrib.messages import get_messages

from betaassi_django.client import get_client
from betaassi_django.models import Assistant, PublishedEvent, Session
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.testapp.models import Kitchen, Support

pytestmark = pytest.mark.django_db(transaction=True)




def shown(response, level: str | None = None) -> list[str]:
    """The admin messages this request added (earlier ones wait in the cookie until a page shows them), or
    those a rendered page showed; only those of ``level`` ("error", "warning"...) if given."""
    found = response.context["messages"] if response.status_code == 200 else get_messages(
        response.wsgi_request)._queued_messages
    return [str(m) for m in found if level is None or m.level_tag == level]


def support_form(**values) -> dict:
    """What the Support add/change form posts (the inline management form included)."""
    data = {"name": "", "description": "", "model": "gpt-4o", "instructions": "", "tools": "[]", "temperature": "",
            "top_p": "", "tier": "1", "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0",
            "sessions-MIN_NUM_FORMS": "0", "sessions-MAX_NUM_FORMS": "1000"}
    data.update(values)
    return {k: v for k, v in data.items() if v is not None}


def test_changelist_shows_type_model_sessions_lag_and_id(web, staff):
    desk = Support.objects.create(name="Desk", model="gpt-4o-mini", tier=2)
    other = Support.objects.create(name="Other", model="gpt-4o")
    desk.sessions.create("s1", owner=staff)
    desk.sessions.create("s2", owner=staff)
    Processor().run_once()
    desk.sessions.update("s1", kind="oneshot")  # published, not applied: the lag is 1

    response = web.get("/admin/testapp/support/")
    assert response.status_code == 200
    rows = {a.id: a for a in response.context["cl"].result_list}
    assert (rows[desk.id].sessions_count, rows[desk.id].queue_lag_text) == (2, "1")
    assert (rows[other.id].sessions_count, rows[other.id].queue_lag_text) == (0, "0")
    html = response.text
    for text in ("Desk", "testapp.Support", "gpt-4o-mini", desk.id, admin_path(Support, "queue", desk.id)):
        assert text in html

    assert [a.id for a in web.get("/admin/testapp/support/", {"q": "desk"}).context["cl"].result_list] == [desk.id]
    assert [a.id for a in web.get("/admin/testapp/support/", {"q": other.id}).context["cl"].result_list] == [other.id]
    filtered = web.get("/admin/testapp/support/", {"model": "gpt-4o-mini"})
    assert [a.id for a in filtered.context["cl"].result_list] == [desk.id]


def test_the_type_filter_lists_every_assistant_type(web):
    Support.objects.create(name="Desk")
    Assistant.objects.create(name="Plain")
    response = web.get("/admin/betaassi_django/assistant/")
    type_filter = next(f for f in response.context["cl"].filter_specs if f.title == "type")
    choices = {c["display"]: (c["query_string"], c["selected"]) for c in type_filter.choices(response.context["cl"])}
    assert choices == {
        "betaassi_django.Assistant (1)": ("/admin/betaassi_django/assistant/", True),
        "testapp.Support (1)": ("/admin/testapp/support/", False),
        "testapp.Kitchen (0)": ("/admin/testapp/kitchen/", False),
    }
    assert [a.name for a in response.context["cl"].result_list] == ["Plain"]
    with_counts = web.get("/admin/testapp/support/", {"_facets": "True"})
    assert with_counts.status_code == 200 and [a.name for a in with_counts.context["cl"].result_list] == ["Desk"]


def test_add_writes_through_with_the_subclass_fields(web):
    response = web.post("/admin/testapp/support/add/", support_form(name="Desk", model="gpt-4o-mini", tier="3",
                                                                    escalate="on", instructions="Be kind."))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    desk = Support.objects.get()
    remote = get_client().beta.assistants.retrieve(desk.id)
    assert (remote.name, remote.model, remote.instructions) == ("Desk", "gpt-4o-mini", "Be kind.")
    assert {k: remote.metadata[k] for k in ("betaassi_type", "tier", "escalate")} == {
        "betaassi_type": "testapp.Support", "tier": "3", "escalate": "true"}
    assert remote.metadata[PUBLISH_KEY].startswith("thread_") and remote.metadata[REGISTRY_KEY].startswith("thread_")
    assert (desk.tier, desk.escalate) == (3, True)


def test_metadata_limits_are_form_errors_and_nothing_is_written(web):
    before = len(get_client().beta.assistants.list(limit=100).data)
    response = web.post("/admin/testapp/kitchen/add/", {
        "model": "gpt-4o", "tools": "[]", "text": "x" * 9000, "short": "fits", "color": "red",
        "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["text"]
    assert "metadata" in errors["text"][0]
    assert len(get_client().beta.assistants.list(limit=100).data) == before
    assert not Kitchen.objects.exists()

    response = web.post("/admin/testapp/kitchen/add/", {
        "model": "gpt-4o", "tools": "[]", "short": "x" * 21, "color": "red", "data": "{not json",
        "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    assert sorted(response.context["adminform"].form.errors) == ["data", "short"]
    assert len(get_client().beta.assistants.list(limit=100).data) == before


def test_a_400_from_the_backend_is_an_error_on_its_field(web):
    desk = Support.objects.create(name="Desk")
    response = web.post(admin_path(Support, "change", desk.id),
                        support_form(name="Renamed", tools=json.dumps([{"type": "no-such-tool"}])))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert list(form.errors) == ["tools"]
    assert form.errors["tools"][0].startswith(
        "Saving Renamed in the backend failed: the backend answered 400: Invalid value for 'tools[0]'")
    assert shown(response) == [form.errors["tools"][0]]
    assert html.escape(form.errors["tools"][0]) in response.text
    assert get_client().beta.assistants.retrieve(desk.id).name == "Desk"
    assert Support.objects.get().name == "Desk"


def test_change_writes_through(web):
    desk = Support.objects.create(name="Desk", tier=1)
    response = web.post(admin_path(Support, "change", desk.id), support_form(name="Help desk", tier="5"))
    assert response.status_code == 302
    remote = get_client().beta.assistants.retrieve(desk.id)
    assert (remote.name, remote.metadata["tier"]) == ("Help desk", "5")
    assert (Support.objects.get().name, Support.objects.get().tier) == ("Help desk", 5)


def test_change_page_shows_core_own_and_backend_fields(web, staff):
    desk = Support.objects.create(name="Desk", tier=4)
    desk.sessions.create("s1", owner=staff)
    Processor().run_once()
    response = web.get(admin_path(Support, "change", desk.id))
    assert response.status_code == 200
    names = [[line.fields for line in fieldset] for fieldset in response.context["adminform"]]
    assert [field for lines in names[0] for field in lines] == [
        "name", "description", "model", "instructions", "tools", "temperature", "top_p"]
    assert [field for lines in names[1] for field in lines] == ["tier", "escalate"]
    assert admin_path(Support, "queue", desk.id) in response.text
    sessions = response.context["inline_admin_formsets"][0].formset
    assert [(f.instance.session_id, f.instance.status_text) for f in sessions.initial_forms] == [("s1", "applied")]


def test_delete_removes_the_assistant_its_queue_and_session_threads(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s1", owner=staff)
    Processor().run_once()
    thread_id = Session.objects.get().thread_id
    queue_threads = [desk.metadata[PUBLISH_KEY], desk.metadata[REGISTRY_KEY]]

    response = web.post(admin_path(Support, "delete", desk.id), {"post": "yes"})
    assert response.status_code == 302
    api = get_client()
    for gone in (lambda: api.beta.assistants.retrieve(desk.id), *(
            lambda t=t: api.beta.threads.retrieve(t) for t in (thread_id, *queue_threads))):
        with pytest.raises(openai.NotFoundError):
            gone()
    assert not Support.objects.exists()
    assert not Session.objects.exists() and not PublishedEvent.objects.exists()


def test_bulk_delete_asks_then_deletes_remotely(web):
    one, two = Support.objects.create(name="One"), Support.objects.create(name="Two")
    action = {"action": "delete_selected", "_selected_action": [one.id, two.id]}
    confirm = web.post("/admin/testapp/support/", action)
    assert confirm.status_code == 200 and "Are you sure you want to delete the selected supports?" in confirm.text
    done = web.post("/admin/testapp/support/", {**action, "post": "yes"})
    assert done.status_code == 302
    assert shown(done) == ["Deleted 2 assistant(s) with their publish queues and session threads."]
    assert get_client().beta.assistants.list(limit=100).data == []
    assert not Support.objects.exists()


def test_the_default_assistant_is_registered(web):
    response = web.post("/admin/betaassi_django/assistant/add/", support_form(name="Plain", tier=None))
    assert response.status_code == 302
    plain = Assistant.objects.get()
    assert get_client().beta.assistants.retrieve(plain.id).metadata["betaassi_type"] == "betaassi_django.Assistant"
