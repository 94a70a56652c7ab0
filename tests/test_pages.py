"""The session list and chat pages, through Django's test web, with a processor serving in a thread."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client

from betaassi_django.models import Assistant, Session
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def view_session() -> Permission:
    """The permission to see every session (and so to name a new session's id on the start form)."""
    return Permission.objects.get(codename="view_session", content_type__app_label="betaassi_django")


@pytest.fixture
def web(visitor):
    """The pages as a visitor sees them before logging in (conftest's ``web`` is logged in as staff)."""
    return visitor


def test_pages_need_a_login(web):
    support = Support.objects.create(name="support")
    for url in ("/", f"/chat/{support.id}/s1/"):
        response = web.get(url)
        assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={url}"
    assert web.post("/sessions/start/", {"assistant": support.id})["Location"].startswith("/accounts/login/")


def test_login_then_the_session_list(web, alice):
    support = Support.objects.create(name="Support desk", model="gpt-4o-mini")
    page = web.get("/accounts/login/")
    assert page.status_code == 200 and 'name="csrfmiddlewaretoken"' in page.text
    response = web.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = web.get("/")
    assert page.status_code == 200
    assert "Support desk" in page.text and support.id in page.text
    assert "No sessions with this assistant yet." in page.text
    assert f'<option value="{support.id}">Support desk</option>' in page.text


def test_starting_a_session_waits_until_it_is_applied(web, alice, processor):
    support = Support.objects.create(name="support")
    alice.user_permissions.add(view_session())  # may name the id (forms.py)
    web.force_login(alice)
    response = web.post("/sessions/start/", {"assistant": support.id, "session_id": "mine", "kind": "manyshots",
                                                "context_messages": "3", "model": "gpt-4o-mini"})
    assert response.status_code == 302 and response["Location"] == f"/chat/{support.id}/mine/"
    session = Session.objects.get(assistant_id=support.id, session_id="mine")
    assert (session.owner, session.kind, session.context_messages, session.model) == (
        alice, "manyshots", 3, "gpt-4o-mini")
    chat = web.get(response["Location"])
    assert chat.status_code == 200
    assert f'"/ws/assistants/{support.id}/sessions/mine/"' in chat.text
    assert "last 3 messages" in chat.text
    listing = web.get("/")
    assert f'href="/chat/{support.id}/mine/"' in listing.text

    again = web.post("/sessions/start/", {"assistant": support.id, "session_id": "mine", "kind": "default"},
                        follow=True)
    assert "Session mine was not created (noop): the id is taken." in again.text


def test_a_blank_id_gets_a_random_one(web, alice, processor):
    support = Support.objects.create(name="support")
    web.force_login(alice)
    response = web.post("/sessions/start/", {"assistant": support.id, "kind": "oneshot"})
    match = re.fullmatch(rf"/chat/{support.id}/(chat-[0-9a-f]{{16}})/", response["Location"])
    assert match
    assert Session.objects.get(session_id=match[1]).kind == "oneshot"


@pytest.mark.parametrize(("data", "field", "error"), [
    ({"kind": "manyshots"}, "context_messages", "Say how many messages"),
    ({"kind": "manyshots", "context_messages": "0"}, "context_messages", "greater than or equal to 1"),
    ({"kind": "sometimes"}, "kind", "Select a valid choice"),
    ({"kind": "default", "session_id": "has space"}, "session_id", "Use 1 to 60 letters"),
    ({"kind": "default", "session_id": "x" * 61}, "session_id", "at most 60 characters"),
])
def test_bad_form_input_is_shown_and_nothing_is_published(web, alice, data, field, error):
    support = Support.objects.create(name="support")
    alice.user_permissions.add(view_session())  # the id field is hers
    web.force_login(alice)
    response = web.post("/sessions/start/", {"assistant": support.id, **data})
    assert response.status_code == 400
    assert error in str(response.context["form"].errors[field])
    assert Processor().run_once() == 0  # no event reached the queue


def test_an_unknown_assistant_is_a_form_error(web, alice):
    Support.objects.create(name="support")
    web.force_login(alice)
    response = web.post("/sessions/start/", {"assistant": "asst_nope", "kind": "default"})
    assert response.status_code == 400 and "Select a valid choice" in str(response.context["form"].errors)


def test_without_a_processor_the_user_is_told(web, alice, monkeypatch):
    from betaassi_django import views

    support = Support.objects.create(name="support")
    web.force_login(alice)
    monkeypatch.setattr(views, "APPLY_WAIT_SECONDS", 0.2)
    response = web.post("/sessions/start/", {"assistant": support.id, "kind": "default"}, follow=True)
    assert re.search(r"Session chat-[0-9a-f]{16} is published but not applied yet; is process_publish_queue "
                     r"running\?", response.text)


def test_only_the_owner_opens_a_chat_and_others_get_not_found(web, alice):
    support = Support.objects.create(name="support")
    support.sessions.create("private", owner=alice)
    Processor().run_once()
    bob = get_user_model().objects.create_user("bob", password="x")
    staff = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    for user in (bob, staff):  # is_staff alone grants nothing (tests/test_access.py has the permissions)
        web.force_login(user)
        assert web.get(f"/chat/{support.id}/private/").status_code == 404
        assert web.get(f"/chat/{support.id}/missing/").status_code == 404
    web.force_login(alice)
    page = web.get(f"/chat/{support.id}/private/")
    assert page.status_code == 200 and 'id="read-only"' not in page.text and 'id="not-yours"' not in page.text


def test_csrf_is_enforced(alice):
    support = Support.objects.create(name="support")
    web = Client(enforce_csrf_checks=True)
    web.force_login(alice)
    assert web.post("/sessions/start/", {"assistant": support.id, "kind": "default"}).status_code == 403


def test_setup_demo_creates_a_user_and_an_assistant_once(capsys):
    call_command("setup_demo")
    out = capsys.readouterr().out
    password = re.search(r"user demo  password (\S+)", out)[1]
    assert get_user_model().objects.get(username="demo").check_password(password)
    assert Assistant.objects.get().name == "Demo assistant"
    call_command("setup_demo")
    out = capsys.readouterr().out
    assert "password" not in out.split("(")[0] and "Demo assistant" not in out
    assert Assistant.objects.count() == 1 and get_user_model().objects.filter(username="demo").count() == 1
