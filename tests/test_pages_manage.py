"""A user changes and deletes their own sessions from the session list, through Django's test web and the real
publish queue (a processor serving in a thread, or ``Processor().run_once()`` when the test applies it)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils.html import escape

from betaassi_django import views
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def support():
    return Support.objects.create(name="Support desk", model="gpt-4o")


@pytest.fixture
def web(alice):
    browser = Client()
    browser.force_login(alice)
    return browser


@pytest.fixture
def no_wait(monkeypatch):
    """The pages wait a moment, not 10 s, for a processor that is not running."""
    monkeypatch.setattr(views, "APPLY_WAIT_SECONDS", 0.2)


def sessions_of(support, owner, **kinds) -> None:
    """Sessions created through the queue and applied: ``name=kind``."""
    events = [support.sessions.create(session_id, owner=owner, kind=kind,
                                      context_messages=4 if kind == "manyshots" else None)
              for session_id, kind in kinds.items()]
    Processor().run_once()  # or the serving processor (the ``processor`` fixture) applies them
    assert [support.sessions.wait(event_id).status for event_id in events] == ["applied"] * len(kinds)


def url(support, session_id: str, action: str) -> str:
    return f"/sessions/{support.id}/{session_id}/{action}/"


def row(page, session_id: str) -> str:
    """The session's row on the list page."""
    match = re.search(rf'<tr class="session[^"]*" data-session="{re.escape(session_id)}">.*?</tr>', page.text, re.S)
    assert match, f"no row for {session_id}"
    return match[0]


def test_the_list_shows_change_and_delete_and_no_zero_minutes(web, alice, support):
    sessions_of(support, alice, first="default", second="manyshots")
    Session.objects.filter(session_id="first").update(touched_at=None)
    page = web.get("/")
    first, second = row(page, "first"), row(page, "second")
    assert f'href="/chat/{support.id}/first/"' in first and f'href="{url(support, "first", "edit")}"' in first
    assert f'href="{url(support, "first", "delete")}"' in first and "Deleting" not in first
    assert "not used yet" in first and "last 4 messages" in second
    assert "0 minutes" not in page.text and "0\xa0minutes" not in page.text
    Session.objects.filter(session_id="second").update(touched_at=Session.objects.get(session_id="second").created_at)
    assert "just now" in row(web.get("/"), "second")


def test_a_deletion_shows_as_pending_until_the_processor_applies_it(web, alice, support, no_wait):
    sessions_of(support, alice, doomed="default", kept="oneshot")
    confirm = web.get(url(support, "doomed", "delete"))
    assert confirm.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in confirm.text and 'id="confirm-delete"' in confirm.text
    done = web.post(url(support, "doomed", "delete"), follow=True)
    assert done.redirect_chain == [("/", 302)]
    assert ("The deletion of session doomed is published but not applied yet; is process_publish_queue running?"
            in done.text)
    doomed = row(done, "doomed")
    assert "Deleting…" in doomed and "<a" not in doomed  # no chat link, no change or delete link
    assert doomed.count("disabled>") == 2
    assert f'href="/chat/{support.id}/kept/"' in row(done, "kept") and "Deleting" not in row(done, "kept")

    assert Processor().run_once() == 1
    page = web.get("/")
    assert 'data-session="doomed"' not in page.text and 'data-session="kept"' in page.text
    assert not Session.objects.filter(session_id="doomed").exists()


def test_a_deletion_applied_in_time_says_so(web, alice, support, processor):
    sessions_of(support, alice, gone="default")
    done = web.post(url(support, "gone", "delete"), follow=True)
    assert "Session gone was deleted." in done.text and 'data-session="gone"' not in done.text
    assert "No sessions with this assistant yet." in done.text


def test_another_users_session_is_answered_as_a_missing_one_and_nothing_is_published(web, alice, support):
    bob = get_user_model().objects.create_user("bob", password="x")
    sessions_of(support, bob, bobs="default")
    # Even with the permissions to read and send in every session, these pages touch only one's own.
    alice.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_session", "change_session", "delete_session"], content_type__app_label="betaassi_django"))
    for session_id in ("bobs", "missing"):
        for action in ("edit", "delete"):
            assert web.get(url(support, session_id, action)).status_code == 404
            assert web.post(url(support, session_id, action), {"kind": "oneshot"}).status_code == 404
    assert web.post("/sessions/asst_nope/bobs/delete/").status_code == 404
    assert Processor().run_once() == 0  # nothing reached the queue
    assert Session.objects.get(session_id="bobs").kind == "default"


def test_get_on_delete_only_asks(web, alice, support):
    sessions_of(support, alice, mine="default")
    assert web.get(url(support, "mine", "delete")).status_code == 200
    assert Processor().run_once() == 0 and Session.objects.filter(session_id="mine").exists()


def test_csrf_is_enforced_and_the_pages_forms_carry_it(alice, support, no_wait):
    sessions_of(support, alice, mine="manyshots")
    web = Client(enforce_csrf_checks=True)
    web.force_login(alice)
    assert web.post(url(support, "mine", "delete")).status_code == 403
    assert web.post(url(support, "mine", "edit"), {"kind": "oneshot"}).status_code == 403
    assert Processor().run_once() == 0
    for action, data in (("edit", {"kind": "oneshot"}), ("delete", {})):
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', web.get(url(support, "mine", action)).text)[1]
        assert web.post(url(support, "mine", action), {**data, "csrfmiddlewaretoken": token}).status_code == 302
        assert Processor().run_once() == 1  # one pending event per session: the change is applied first
    assert not Session.objects.filter(session_id="mine").exists()


@pytest.mark.parametrize(("data", "kept", "shown"), [
    ({"kind": "default"}, ("default", None, None), "full history, model the assistant's"),
    ({"kind": "oneshot", "model": "gpt-4o-mini"}, ("oneshot", None, "gpt-4o-mini"),
     "one-shot, model gpt-4o-mini"),
    ({"kind": "manyshots", "context_messages": "7", "model": "gpt-4o"}, ("manyshots", 7, "gpt-4o"),
     "last 7 messages, model gpt-4o"),
    # As on the start form and in the admin: N belongs to 'last N messages' only, and is dropped for the others.
    ({"kind": "default", "context_messages": "5"}, ("default", None, None), "full history, model the assistant's"),
])
def test_changing_kind_n_and_model(web, alice, support, processor, data, kept, shown):
    sessions_of(support, alice, mine="manyshots")
    page = web.get(url(support, "mine", "edit"))
    assert page.status_code == 200
    assert page.context["form"].initial == {"kind": "manyshots", "context_messages": 4, "model": ""}
    assert page.context["form"].fields["model"].choices == [
        ("", "the assistant's model (gpt-4o)"), ("gpt-4o", "gpt-4o"), ("gpt-4o-mini", "gpt-4o-mini")]
    done = web.post(url(support, "mine", "edit"), data, follow=True)
    assert done.redirect_chain == [("/", 302)]
    assert escape(f"Session mine changed: {shown}.") in done.text
    session = Session.objects.get(session_id="mine")
    assert (session.kind, session.context_messages, session.model) == kept


def test_unchanged_settings_publish_nothing(web, alice, support):
    sessions_of(support, alice, mine="manyshots")
    done = web.post(url(support, "mine", "edit"), {"kind": "manyshots", "context_messages": "4"}, follow=True)
    assert "Session mine already has these settings; nothing changed." in done.text
    assert Processor().run_once() == 0


def test_a_change_not_applied_in_time_is_a_warning_and_shows_as_changing(web, alice, support, no_wait):
    sessions_of(support, alice, mine="default")
    done = web.post(url(support, "mine", "edit"), {"kind": "oneshot"}, follow=True)
    assert "The change of session mine is published but not applied yet" in done.text
    assert "Changing…" in row(done, "mine") and f'href="/chat/{support.id}/mine/"' in row(done, "mine")
    assert Processor().run_once() == 1 and Session.objects.get(session_id="mine").kind == "oneshot"
    assert "Changing…" not in row(web.get("/"), "mine")


LONG = "x" * 10_240


@pytest.mark.parametrize(("data", "field", "error"), [
    ({"kind": "manyshots"}, "context_messages", "Say how many messages 'last N messages' keeps."),
    ({"kind": "manyshots", "context_messages": "0"}, "context_messages", "greater than or equal to 1"),
    ({"kind": "manyshots", "context_messages": "-5"}, "context_messages", "greater than or equal to 1"),
    ({"kind": "manyshots", "context_messages": "1001"}, "context_messages", "less than or equal to 1000"),
    ({"kind": "manyshots", "context_messages": "9" * 40}, "context_messages", "less than or equal to 1000"),
    ({"kind": "manyshots", "context_messages": LONG}, "context_messages", "Enter a whole number."),
    ({"kind": "default", "model": "gpt-4-turbo"}, "model", "Select a valid choice. gpt-4-turbo is not one"),
    ({"kind": "default", "model": "m" * 10_240}, "model", "Select a valid choice."),  # "m*" allows it: not listable
    ({"kind": LONG}, "kind", "Select a valid choice."),
    ({"kind": "sometimes"}, "kind", "Select a valid choice. sometimes is not one of the available choices."),
    ("kind=%ED%A0%80", "kind", "Select a valid choice."),  # a lone surrogate, as a browser could send it
    ("kind=manyshots&context_messages=%ED%A0%80", "context_messages", "Enter a whole number."),
    ("kind=default&model=gpt-4o%ED%A0%80", "model", "Select a valid choice."),
])
def test_bad_input_is_the_form_again_with_the_field_named_and_nothing_published(web, alice, support, data, field,
                                                                                 error):
    sessions_of(support, alice, mine="default")
    if isinstance(data, str):
        response = web.post(url(support, "mine", "edit"), data, content_type="application/x-www-form-urlencoded")
    else:
        response = web.post(url(support, "mine", "edit"), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field] and error in " ".join(errors[field])
    assert 'id="edit-session"' in response.text and 'class="field has-errors"' in response.text
    assert Processor().run_once() == 0
    assert Session.objects.get(session_id="mine").kind == "default"


def test_a_model_the_allow_list_no_longer_has_is_refused(web, alice, support, monkeypatch, no_wait):
    sessions_of(support, alice, mine="default")
    monkeypatch.setattr(Support, "allowed_models", ["gpt-4o-mini"])
    assert web.post(url(support, "mine", "edit"), {"kind": "default", "model": "gpt-4o-mini"}).status_code == 302
    assert Processor().run_once() == 1
    monkeypatch.setattr(Support, "allowed_models", ["m*"])  # the operator narrowed the list since
    page = web.get(url(support, "mine", "edit"))
    assert page.context["form"].fields["model"].choices == [
        ("", "the assistant's model (gpt-4o)"), ("gpt-4o", "gpt-4o")]
    response = web.post(url(support, "mine", "edit"), {"kind": "oneshot", "model": "gpt-4o-mini"})
    assert response.status_code == 400 and list(response.context["form"].errors) == ["model"]
    assert Processor().run_once() == 0


def test_a_change_the_processor_refuses_says_why(web, alice, support, processor):
    """The processor judges the model against the assistant in the backend: changed there by another deployment
    (this one's mirror not synced yet), the page's allowed choice is refused when applied, and the page says so."""
    from betaassi_django.client import get_client

    sessions_of(support, alice, mine="default")
    get_client().beta.assistants.update(support.id, model="gpt-4o-mini")
    done = web.post(url(support, "mine", "edit"), {"kind": "oneshot", "model": "gpt-4o"}, follow=True)
    assert done.redirect_chain == [("/", 302)]
    assert escape("Session mine was not changed: model 'gpt-4o' is not allowed for this assistant; allowed: "
                  "gpt-4o-mini, m*.") in done.text
    session = Session.objects.get(session_id="mine")
    assert (session.kind, session.model) == ("default", None)


def test_a_pending_deletion_refuses_the_owners_change_and_deletion_until_applied(web, alice, support, no_wait):
    """The admin's deletion is pending: the owner's change and deletion are refused, saying why, and publish
    nothing (one pending event per session); the processor then applies the admin's."""
    from betaassi_django.publishing.status import queue_status

    sessions_of(support, alice, mine="default")
    support.sessions.delete("mine")  # the admin's, not applied yet
    for action, data in (("edit", {"kind": "oneshot"}), ("delete", {})):
        done = web.post(url(support, "mine", action), data, follow=True)
        assert done.redirect_chain == [("/", 302)]
        assert "Session mine has a deletion that is not applied yet; wait until it is, then try again." in done.text
        assert "Deleting…" in row(done, "mine")
    assert queue_status(support).pending_by_session() == {"mine": ["session.delete"]}
    assert Processor().run_once() == 1
    assert not Session.objects.filter(session_id="mine").exists()


def test_changes_posted_in_a_loop_publish_one_event_until_it_is_applied(web, alice, support, no_wait):
    """The queue is shared by every user of the assistant: a user looping on the change page adds one event, not
    one per post, so other users' changes are not delayed behind theirs."""
    from betaassi_django.publishing.status import queue_status

    sessions_of(support, alice, mine="default", other="default")
    assert web.post(url(support, "mine", "edit"), {"kind": "oneshot"}).status_code == 302
    for n in range(1, 6):
        done = web.post(url(support, "mine", "edit"), {"kind": "manyshots", "context_messages": str(n)},
                        follow=True)
        assert "Session mine has a change that is not applied yet; wait until it is, then try again." in done.text
    refused = web.post(url(support, "mine", "delete"), follow=True)
    assert "Session mine has a change that is not applied yet" in refused.text
    # Another session of the same user is not held up by it.
    assert web.post(url(support, "other", "edit"), {"kind": "oneshot"}).status_code == 302
    assert queue_status(support).pending_by_session() == {"mine": ["session.update"], "other": ["session.update"]}
    assert Processor().run_once() == 2
    assert Session.objects.get(session_id="mine").kind == "oneshot"
    web.post(url(support, "mine", "edit"), {"kind": "manyshots", "context_messages": "3"})
    assert Processor().run_once() == 1
    mine = Session.objects.get(session_id="mine")
    assert (mine.kind, mine.context_messages) == ("manyshots", 3)


def test_a_backend_that_does_not_answer_is_a_message_never_a_500(web, alice, support):
    """The backend unreachable (a closed port): each page says nothing was changed, and the list still shows."""
    from betaassi_django.client import build_client, use_clients
    from betaassi_django.testing import free_port

    sessions_of(support, alice, mine="default")
    gone = build_client(backend="remote", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="sk-x",
                        max_retries=0, timeout=2.0)
    with use_clients(gone):
        for action, data in (("edit", {"kind": "oneshot"}), ("delete", {})):
            done = web.post(url(support, "mine", action), data, follow=True)
            assert done.redirect_chain == [("/", 302)] and done.status_code == 200
            assert "The backend did not answer, so nothing was changed; please try again." in done.text
            assert "Pending changes are unknown for now: the backend did not answer." in done.text
            assert f'href="/chat/{support.id}/mine/"' in row(done, "mine")
        started = web.post("/sessions/start/", {"assistant": support.id, "kind": "default"}, follow=True)
        assert "The backend did not answer, so nothing was changed; please try again." in started.text
    assert Processor().run_once() == 0
    assert Session.objects.get(session_id="mine").kind == "default"
