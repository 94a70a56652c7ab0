"""Open WebSockets follow the account (project ASGI stack, real login and logout views).

``pushed_only`` sets the periodic re-check to ten minutes, so a close within
the test's bound can only come from the push (a signal through the user's
channel-layer group) or from the check before a turn.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client

from betaassi_django import conf, turns
from betaassi_django.client import get_async_client
from betaassi_django.groups import session_group
from betaassi_django.publishing.processor import Processor
from project.asgi import application
from tests.test_websocket import ORIGIN, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "secret-pass-1"
#: The bound the issue names ("within seconds"), generous for a loaded machine.
CLOSE_WITHIN = 10


@pytest.fixture
def pushed_only(settings):
    settings.BETAASSI_WEBSOCKET_RECHECK_SECONDS = 600.0


def _permission(codename: str) -> Permission:
    return Permission.objects.get(content_type__app_label="betaassi_django", codename=codename)


@pytest.fixture
def users():
    model = get_user_model()
    alice = model.objects.create_user("alice", password=PASSWORD)
    viewer = model.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(_permission("view_session"))
    changer = model.objects.create_user("changer", password=PASSWORD, is_staff=True)
    changer.user_permissions.add(_permission("view_session"), _permission("change_session"))
    grouped = model.objects.create_user("grouped", password=PASSWORD, is_staff=True)
    group = Group.objects.create(name="readers")
    group.permissions.add(_permission("view_session"))
    grouped.groups.add(group)
    return {"alice": alice, "viewer": viewer, "changer": changer, "grouped": grouped, "readers": group}


@pytest.fixture
def support(users):
    support = Support.objects.create(name="support")
    support.sessions.create("chat-1", owner=users["alice"])
    Processor().run_once()
    return support


def _login(username: str) -> Client:
    """A browser's login through the real login view: its own Django session."""
    web = Client()
    assert web.post("/accounts/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return web


async def _socket(support, web: Client):
    cookie = f"sessionid={web.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, f"/ws/assistants/{support.id}/sessions/chat-1/",
                                         headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    ready = await communicator.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready"
    return communicator, ready


async def _close_code(communicator, timeout: float = CLOSE_WITHIN) -> int:
    """The code the server closes with; frames before it (a turn's tail) are skipped."""
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            await communicator.wait()
            return output["code"]


async def _user_messages(thread_id: str) -> list[str]:
    page = await get_async_client().beta.threads.messages.list(thread_id, order="asc", limit=100)
    return [m.content[0].text.value for m in page.data if m.role == "user"]


async def _still_works(communicator, text: str, context: int = 1) -> None:
    await communicator.send_json_to({"type": "user.message", "content": text})
    assert _reply(await _turn(communicator)) == f"echo: {text} [context={context}]"


# -- pushed at once -----------------------------------------------------------------------------------------


async def test_logout_through_the_view_closes_that_logins_sockets(support, pushed_only):
    web, other = await sync_to_async(_login)("alice"), await sync_to_async(_login)("alice")
    socket, _ = await _socket(support, web)
    elsewhere, _ = await _socket(support, other)
    response = await sync_to_async(web.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await _close_code(socket) == 4401
    await _still_works(elsewhere, "the other login stays")  # logging out one browser leaves the others
    await elsewhere.disconnect()


async def test_set_password_closes_every_socket_of_the_user(support, users, pushed_only):
    socket, _ = await _socket(support, await sync_to_async(_login)("alice"))

    def change():
        alice = get_user_model().objects.get(username="alice")
        alice.set_password("another-pass-2")
        alice.save()

    await sync_to_async(change)()
    assert await _close_code(socket) == 4401


async def test_the_password_change_view_closes_the_other_logins(support, pushed_only):
    web, other = await sync_to_async(_login)("alice"), await sync_to_async(_login)("alice")
    socket, _ = await _socket(support, other)
    own, _ = await _socket(support, web)
    response = await sync_to_async(web.post)("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": "Brand-new-pass-9", "new_password2": "Brand-new-pass-9"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password_change/done/"
    assert await _close_code(socket) == 4401
    # The changer's browser stays logged in under a new session key (Django cycles it); the socket opened with
    # the old key is closed too, and a new socket with the browser's new cookie works.
    assert await _close_code(own) == 4401
    again, _ = await _socket(support, web)
    await _still_works(again, "after the change")
    await again.disconnect()


async def test_deactivation_closes_with_4401(support, users, pushed_only):
    socket, _ = await _socket(support, await sync_to_async(_login)("alice"))
    alice = users["alice"]
    alice.is_active = False
    await sync_to_async(alice.save)()
    assert await _close_code(socket) == 4401


async def test_losing_the_permission_closes_with_4403(support, users, pushed_only):
    direct, _ = await _socket(support, await sync_to_async(_login)("viewer"))
    by_group, _ = await _socket(support, await sync_to_async(_login)("grouped"))
    await sync_to_async(users["viewer"].user_permissions.remove)(await sync_to_async(_permission)("view_session"))
    assert await _close_code(direct) == 4403
    await sync_to_async(users["readers"].permissions.clear)()
    assert await _close_code(by_group) == 4403


async def test_leaving_the_group_closes_with_4403(support, users, pushed_only):
    socket, _ = await _socket(support, await sync_to_async(_login)("grouped"))
    await sync_to_async(users["grouped"].groups.remove)(users["readers"])
    assert await _close_code(socket) == 4403


async def test_losing_change_but_keeping_view_makes_the_socket_read_only(support, users, pushed_only):
    socket, _ = await _socket(support, await sync_to_async(_login)("changer"))
    await _still_works(socket, "while allowed")
    await sync_to_async(users["changer"].user_permissions.remove)(await sync_to_async(_permission)("change_session"))
    await socket.send_json_to({"type": "user.message", "content": "not any more"})
    error = await socket.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "read_only"
    await socket.disconnect()


# -- no turn after the change -------------------------------------------------------------------------------


async def test_the_check_before_a_turn_refuses_a_change_no_signal_reported(support, users, pushed_only):
    socket, ready = await _socket(support, await sync_to_async(_login)("alice"))
    # A raw UPDATE sends no signal, and the periodic re-check is ten minutes away: only the turn's check sees it.
    await get_user_model().objects.filter(pk=users["alice"].pk).aupdate(is_active=False)
    await socket.send_json_to({"type": "user.message", "content": "too late"})
    assert await _close_code(socket) == 4401
    assert await _user_messages(ready["session"]["thread_id"]) == []


async def test_queued_turns_do_not_run_after_logout(support, settings, pushed_only):
    settings.BETAASSI_ECHO_DELAY = 0.1
    web = await sync_to_async(_login)("alice")
    socket, ready = await _socket(support, web)
    for text in ("m0", "m1", "m2"):
        await socket.send_json_to({"type": "user.message", "content": text})
    while (await socket.receive_json_from(timeout=5))["type"] != "run.started":
        pass  # m0 is running; m1 and m2 wait
    assert (await sync_to_async(web.post)("/accounts/logout/")).status_code == 302
    assert await _close_code(socket) == 4401
    group = session_group(support.id, "chat-1")
    for _ in range(200):  # the session's queue in this process drains: m0 ends, m1 and m2 are dropped
        if group not in turns._sessions:
            break
        await asyncio.sleep(0.05)
    assert group not in turns._sessions
    assert await _user_messages(ready["session"]["thread_id"]) == ["m0"]


# -- the safety net -----------------------------------------------------------------------------------------


def test_the_periodic_recheck_is_every_15_seconds_by_default():
    assert conf.get().websocket_recheck_seconds == 15.0


async def test_the_periodic_recheck_closes_idle_sockets_no_signal_reached(support, users, settings):
    settings.BETAASSI_WEBSOCKET_RECHECK_SECONDS = 3.0
    assert conf.get().websocket_recheck_seconds == 3.0
    owner, _ = await _socket(support, await sync_to_async(_login)("alice"))
    viewer, _ = await _socket(support, await sync_to_async(_login)("viewer"))
    model = get_user_model()
    await model.objects.filter(pk=users["alice"].pk).aupdate(is_active=False)  # no post_save
    through = model.user_permissions.through
    await through.objects.filter(user_id=users["viewer"].pk).adelete()  # no m2m_changed
    assert await _close_code(owner) == 4401
    assert await _close_code(viewer) == 4403
