"""Limits an operator sets (betaassi_django.quotas): sessions per user, turns per minute, models per assistant class.

Each limit is driven through every door: the Python API (a ValidationError naming the field before any backend
request), the start-a-session page, the admin's session form, the WebSocket (an ``error`` frame on a connection
that stays open) and raw publish-queue events (rejected by the processor with the reason).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection
from django.db.models import F
from django.test import Client

from betaassi_django import conf, quotas
from betaassi_django.models import Assistant, PublishedEvent, Session, TurnWindow
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from tests.test_websocket import _ready, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

SUPPORT_MODELS = "allowed: gpt-4o, gpt-4o-mini, m*"  # Support's own model, then its class's allow-list


def view_session() -> Permission:
    """The permission to see every session (and so to name a new session's id on the start form)."""
    return Permission.objects.get(codename="view_session", content_type__app_label="betaassi_django")


@pytest.fixture
def limits(settings):
    settings.BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT = 2
    settings.BETAASSI_MAX_SESSIONS_PER_USER = 3
    settings.BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE = 2
    return settings


def _errors(exc: ValidationError) -> dict[str, list[tuple[str, str]]]:
    return {name: [(e.code, e.message) for e in errors] for name, errors in exc.error_dict.items()}


def _pass_minute() -> None:
    """The turn windows started a minute ago (what waiting a minute would do)."""
    TurnWindow.objects.update(started_at=F("started_at") - datetime.timedelta(seconds=61))


def _status(event_id: str) -> tuple[str, str]:
    return PublishedEvent.objects.values_list("status", "reason").get(event_id=event_id)


# -- settings ---------------------------------------------------------------------------------------------


def test_the_defaults_and_what_switches_a_limit_off(settings):
    for name in ("BETAASSI_MAX_SESSIONS_PER_USER", "BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT",
                 "BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE"):
        if hasattr(settings, name):
            delattr(settings, name)
    conf.get.cache_clear()  # a deleted setting sends no setting_changed
    values = conf.get()
    assert (values.max_sessions_per_user, values.max_sessions_per_user_per_assistant,
            values.max_turns_per_user_per_minute) == (100, 20, 30)
    settings.BETAASSI_MAX_SESSIONS_PER_USER = None
    settings.BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE = 0
    assert (conf.get().max_sessions_per_user, conf.get().max_turns_per_user_per_minute) == (0, 0)
    settings.BETAASSI_MAX_SESSIONS_PER_USER = -1
    with pytest.raises(ImproperlyConfigured, match=r"BETAASSI_MAX_SESSIONS_PER_USER=-1 must be 0 or None"):
        conf.get()


# -- the Python API ---------------------------------------------------------------------------------------


def test_session_counts_are_refused_on_the_owner_field_before_any_request(backend, limits, alice):
    support, other = Support.objects.create(name="support"), Support.objects.create(name="other")
    support.sessions.create("a-1", owner=alice)
    support.sessions.create("a-2", owner=alice)
    other.sessions.create("b-1", owner=alice)
    Processor().run_once()
    backend.reset()
    with pytest.raises(quotas.QuotaExceeded) as refused:
        support.sessions.create("a-3", owner=alice)
    assert _errors(refused.value) == {"owner": [
        ("quota_exceeded", "owner already has 2 sessions with this assistant; the limit is 2")]}
    third = Support.objects.create(name="third")
    backend.reset()
    with pytest.raises(quotas.QuotaExceeded) as refused:
        third.sessions.create("c-1", owner=alice)
    assert _errors(refused.value) == {"owner": [("quota_exceeded", "owner already has 3 sessions in all; "
                                                                   "the limit is 3")]}
    assert backend.requests == []  # refused before any backend call

    root = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    for index in range(4):  # superusers are exempt from the counts
        support.sessions.create(f"r-{index}", owner=root)
    Processor().run_once()
    assert Session.objects.filter(owner=root).count() == 4


def test_a_model_off_the_allow_list_is_refused_on_the_model_field_before_any_request(backend, alice):
    support, plain = Support.objects.create(name="support"), Assistant.objects.create(name="plain", model="gpt-4o")
    support.sessions.create("s-1", owner=alice, model="m-1")  # m* is on Support's list
    Processor().run_once()
    backend.reset()
    with pytest.raises(quotas.ModelNotAllowed) as refused:
        support.sessions.create("s-2", owner=alice, model="o1-pro-expensive")
    assert _errors(refused.value) == {"model": [
        ("model_not_allowed", f"model 'o1-pro-expensive' is not allowed for this assistant; {SUPPORT_MODELS}")]}
    with pytest.raises(quotas.ModelNotAllowed) as refused:
        support.sessions.update("s-1", model="o1-pro-expensive")
    assert _errors(refused.value)["model"][0][1].startswith("model 'o1-pro-expensive' is not allowed")
    with pytest.raises(quotas.ModelNotAllowed) as refused:  # no allow-list: the assistant's own model only
        plain.sessions.create("p-1", owner=alice, model="gpt-4o-mini")
    assert _errors(refused.value) == {"model": [
        ("model_not_allowed", "model 'gpt-4o-mini' is not allowed for this assistant; allowed: gpt-4o")]}
    assert backend.requests == []
    plain.sessions.create("p-1", owner=alice, model="gpt-4o")  # its own model, named, is allowed
    support.sessions.update("s-1", model=None)  # and the assistant's model always is
    assert backend.calls("POST") == 3  # the session's thread, then two events


def test_turns_per_minute_in_ask_and_astream(backend, limits, alice):
    support = Support.objects.create(name="support")
    support.sessions.create("s-1", owner=alice)
    Processor().run_once()
    session = Session.objects.get(session_id="s-1")
    assert session.ask("one").startswith("echo: one")
    assert session.ask("two").startswith("echo: two")
    backend.reset()
    with pytest.raises(quotas.QuotaExceeded) as refused:
        session.ask("three")
    assert refused.value.code == "quota_exceeded"
    wait = int(re.fullmatch(r"more than 2 turns per minute; try again in (\d+) s", refused.value.message)[1])
    assert 50 <= wait <= 60

    async def stream() -> str:
        return "".join([delta async for delta in session.astream("four")])

    with pytest.raises(quotas.QuotaExceeded):
        asyncio.run(stream())
    assert backend.requests == []
    assert TurnWindow.objects.get(user=alice).turns == 2

    _pass_minute()
    assert session.ask("five").startswith("echo: five")
    assert TurnWindow.objects.get(user=alice).turns == 1

    root = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    for text in ("a", "b", "c"):  # a superuser's turns are not counted, even in another's session
        assert session.ask(text, user=root).startswith(f"echo: {text}")


def test_the_turn_count_is_exact_under_concurrency(limits, alice):
    """Twelve threads (each its own database connection, as separate processes would be) take turns at once."""
    limits.BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE = 5
    results, start = [], threading.Barrier(12)

    def take() -> None:
        start.wait()
        try:
            results.append(quotas.take_turn(alice.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 12
    assert results.count(None) == 5
    assert TurnWindow.objects.get(user=alice).turns == 5


# -- events are untrusted ---------------------------------------------------------------------------------


def test_events_naming_a_disallowed_model_or_past_the_counts_are_rejected_with_the_reason(limits, alice):
    support = Support.objects.create(name="support")
    raw = [publish(support, Event("session.create", "x-1", {"owner": alice.pk, "kind": "default",
                                                            "model": "o1-pro-expensive"})),
           publish(support, Event("session.create", "ok-1", {"owner": alice.pk, "kind": "default", "model": "m-1"})),
           publish(support, Event("session.update", "ok-1", {"model": "o1-pro-expensive"})),
           publish(support, Event("session.create", "ok-2", {"owner": alice.pk, "kind": "default"})),
           publish(support, Event("session.create", "ok-3", {"owner": alice.pk, "kind": "default"})),  # a 3rd
           publish(support, Event("session.delete", "ok-2", {})),
           publish(support, Event("session.create", "ok-4", {"owner": alice.pk, "kind": "default"}))]  # room again
    Processor().run_once()
    refused = f"model 'o1-pro-expensive' is not allowed for this assistant; {SUPPORT_MODELS}"
    assert [_status(e) for e in raw] == [
        ("rejected", refused), ("applied", ""), ("rejected", refused), ("applied", ""),
        ("rejected", "owner already has 2 sessions with this assistant; the limit is 2"), ("applied", ""),
        ("applied", "")]
    assert sorted(s.session_id for s in support.sessions.list()) == ["ok-1", "ok-4"]
    assert Session.objects.get(session_id="ok-1").model == "m-1"

    other = Support.objects.create(name="other")  # three in all: one more elsewhere, then none
    events = [publish(other, Event("session.create", f"o-{n}", {"owner": alice.pk, "kind": "default"}))
              for n in range(2)]
    Processor().run_once()
    assert [_status(e) for e in events] == [("applied", ""), ("rejected",
                                                              "owner already has 3 sessions in all; the limit is 3")]


def test_a_model_is_judged_against_the_assistant_as_the_backend_has_it_when_applied(alice, monkeypatch):
    """A sweep reads the assistants before it drains them: a model change made in between (by another
    deployment, or while another processor held the lease) judges the events published after it. Before, the
    sweep's copy did, and a page test failed now and then when its processor's sweep began just before."""
    from betaassi_django.client import get_client

    support = Support.objects.create(name="support", model="gpt-4o")
    processor = Processor(assistant_ids=[support.id])
    swept = processor.assistants()
    assert swept[0].model == "gpt-4o"
    get_client().beta.assistants.update(support.id, model="gpt-4o-mini")
    chosen = publish(support, Event("session.create", "s", {"owner": alice.pk, "kind": "default", "model": "gpt-4o"}))
    plain = publish(support, Event("session.create", "t", {"owner": alice.pk, "kind": "default"}))
    monkeypatch.setattr(processor, "assistants", lambda: swept)  # the sweep as it began, before the change
    assert processor.run_once() == 2
    assert [_status(chosen), _status(plain)] == [
        ("rejected", "model 'gpt-4o' is not allowed for this assistant; allowed: gpt-4o-mini, m*"), ("applied", "")]


# -- the pages --------------------------------------------------------------------------------------------


def test_the_start_form_offers_the_allowed_models_and_shows_the_limits_on_the_form(limits, alice, processor):
    support = Support.objects.create(name="support")
    plain = Assistant.objects.create(name="plain", model="gpt-4o")
    web = Client()
    web.force_login(alice)
    page = web.get("/")
    assert page.context["form"].fields["model"].choices == [
        ("", "the assistant's model"), ("plain", [("gpt-4o", "gpt-4o")]),
        ("support", [("gpt-4o", "gpt-4o"), ("gpt-4o-mini", "gpt-4o-mini")])]  # m* is a pattern: not listed
    assert '<select name="model" aria-describedby="id_model_helptext" id="id_model">' in page.text
    assert '<option value="gpt-4o-mini">gpt-4o-mini</option>' in page.text

    refused = web.post("/sessions/start/", {"assistant": plain.id, "kind": "default", "model": "gpt-4o-mini"})
    assert refused.status_code == 400
    assert refused.context["form"].errors == {
        "model": ["model 'gpt-4o-mini' is not allowed for this assistant; allowed: gpt-4o"]}
    refused = web.post("/sessions/start/", {"assistant": support.id, "kind": "default", "model": "o1-pro-expensive"})
    assert refused.context["form"].errors == {
        "model": ["Select a valid choice. o1-pro-expensive is not one of the available choices."]}

    for _ in range(2):
        assert web.post("/sessions/start/", {"assistant": support.id, "kind": "default",
                                             "model": "gpt-4o-mini"}).status_code == 302
    refused = web.post("/sessions/start/", {"assistant": support.id, "kind": "default"})
    assert refused.status_code == 400
    assert refused.context["form"].errors == {
        "__all__": ["owner already has 2 sessions with this assistant; the limit is 2"]}
    assert "owner already has 2 sessions with this assistant; the limit is 2" in refused.text
    assert Session.objects.filter(owner=alice).count() == 2


def test_an_ordinary_user_cannot_name_a_session_id_so_the_form_confirms_no_one_elses(alice, processor):
    support = Support.objects.create(name="support")
    bob = get_user_model().objects.create_user("bob", password="x")
    support.sessions.create("taken", owner=bob, wait=True)
    web = Client()
    web.force_login(alice)
    assert "session_id" not in web.get("/").context["form"].fields
    answers = []
    for session_id in ("taken", "free"):  # a posted id is ignored: the same answer whether it exists or not
        response = web.post("/sessions/start/", {"assistant": support.id, "session_id": session_id,
                                                 "kind": "default"})
        match = re.fullmatch(rf"/chat/{support.id}/(chat-[0-9a-f]{{16}})/", response["Location"])
        answers.append((response.status_code, bool(match)))
    assert answers == [(302, True), (302, True)]
    assert Session.objects.get(session_id="taken").owner == bob
    assert not Session.objects.filter(session_id="free").exists()

    alice.user_permissions.add(view_session())  # she may list every id anyway
    web.force_login(get_user_model().objects.get(pk=alice.pk))
    assert "session_id" in web.get("/").context["form"].fields


# -- the admin --------------------------------------------------------------------------------------------


def test_the_admin_session_form_shows_the_refusals_as_form_errors(limits, alice, web):
    support = Support.objects.create(name="Desk")
    support.sessions.create("a-1", owner=alice)
    support.sessions.create("a-2", owner=alice)
    Processor().run_once()
    form = {"assistant": support.id, "session_id": "a-3", "owner": alice.pk, "kind": "default", "model": ""}
    refused = web.post("/admin/betaassi_django/session/add/", form)
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {"owner": [
        "owner already has 2 sessions with this assistant; the limit is 2"]}
    assert "owner already has 2 sessions with this assistant; the limit is 2" in refused.text
    refused = web.post("/admin/betaassi_django/session/add/", {**form, "owner": web_user(web).pk,
                                                               "model": "o1-pro-expensive"})
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {"model": [
        f"model 'o1-pro-expensive' is not allowed for this assistant; {SUPPORT_MODELS}"]}
    assert Processor().run_once() == 0  # nothing was published


def web_user(web):
    return get_user_model().objects.get(pk=web.session["_auth_user_id"])


# -- the WebSocket ----------------------------------------------------------------------------------------


async def test_the_websocket_answers_quota_exceeded_and_stays_open_until_the_window_passes(settings, alice):
    settings.BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE = 1
    support = await Support.objects.acreate(name="support")
    await sync_to_async(support.sessions.create)("chat-1", owner=alice)
    await sync_to_async(Processor().run_once)()
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "one"})
    assert _reply(await _turn(communicator)).startswith("echo: one")
    await communicator.send_json_to({"type": "user.message", "content": "two"})
    error = await communicator.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "quota_exceeded")
    wait = int(re.fullmatch(r"more than 1 turn per minute; try again in (\d+) s", error["message"])[1])
    assert 50 <= wait <= 60
    await sync_to_async(_pass_minute)()
    await communicator.send_json_to({"type": "user.message", "content": "three"})
    assert _reply(await _turn(communicator)).startswith("echo: three")  # the same connection, still open
    await communicator.disconnect()


async def test_the_websocket_refuses_a_model_the_allow_list_no_longer_has(alice):
    support = await Support.objects.acreate(name="support")
    await sync_to_async(support.sessions.create)("chat-1", owner=alice)
    await sync_to_async(Processor().run_once)()
    # A session whose model was chosen before the allow-list said otherwise (as its mirror records it).
    await Session.objects.filter(session_id="chat-1").aupdate(model="o1-pro-expensive")
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "one"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error", "code": "model_not_allowed",
        "message": f"this session's model 'o1-pro-expensive' is not allowed for this assistant; {SUPPORT_MODELS}; "
                   "ask for another model"}
    assert not await TurnWindow.objects.filter(user=alice).aexists()  # a refused model takes no turn
    await communicator.send_json_to({"type": "user.message", "content": "two"})  # still open, still refused
    assert (await communicator.receive_json_from(timeout=5))["code"] == "model_not_allowed"
    await communicator.disconnect()

    await Session.objects.filter(session_id="chat-1").aupdate(model=None)  # back to the assistant's model
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "three"})
    assert _reply(await _turn(communicator)).startswith("echo: three")
    await communicator.disconnect()


def test_the_turn_count_statement_is_the_querysets_sql_compiled_once(limits, alice):
    """``take_turn``'s common UPDATE is sent as SQL compiled once (``quotas._room_update``): the SQL the queryset
    makes, one statement per counted turn, and the same counts and refusals."""
    from django.db.models import Exists
    from django.db.models.sql import UpdateQuery
    from django.test.utils import CaptureQueriesContext

    rows = TurnWindow.objects.filter(user_id=alice.pk)
    superuser = get_user_model().objects.filter(pk=alice.pk, is_superuser=True)
    query = rows.filter(~Exists(superuser), started_at__gt=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC),
                        turns__lt=2).query.chain(UpdateQuery)
    query.add_update_values({"turns": F("turns") + 1})
    assert quotas._room_update(connection.alias)[0] == query.get_compiler(connection.alias).as_sql()[0]
    assert quotas.take_turn(alice.pk) is None  # the user's first row
    with CaptureQueriesContext(connection) as sent:
        assert quotas.take_turn(alice.pk) is None
    assert [q["sql"].split(" ")[0] for q in sent.captured_queries] == ["UPDATE"]
    assert TurnWindow.objects.get(user_id=alice.pk).turns == 2
    assert 1 <= quotas.take_turn(alice.pk) <= 60  # no room: the seconds to wait
    assert TurnWindow.objects.get(user_id=alice.pk).turns == 2
    get_user_model().objects.filter(pk=alice.pk).update(is_superuser=True)
    assert quotas.take_turn(alice.pk) is None  # exempt: counted nowhere
    assert TurnWindow.objects.get(user_id=alice.pk).turns == 2
