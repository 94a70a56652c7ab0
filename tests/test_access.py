"""Who may read and send in a session, on the chat page and over its WebSocket (project ASGI stack).

The owner reads and sends; anyone else needs ``view_session`` to read and
``change_session`` to send; ``is_staff`` alone grants nothing; a session one
may not read is answered exactly like one that does not exist.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client

from betaassi_django.client import get_async_client
from betaassi_django.publishing.processor import Processor
from project.asgi import application
from tests.test_websocket import ORIGIN, _cookie, _path, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _user(name: str, *perms: str, is_staff: bool = True, via_group: bool = False):
    user = get_user_model().objects.create_user(name, password="x", is_staff=is_staff)
    permissions = [Permission.objects.get(content_type__app_label="betaassi_django", codename=p) for p in perms]
    if via_group:
        group = Group.objects.create(name=f"{name}-group")
        group.permissions.set(permissions)
        user.groups.add(group)
    else:
        user.user_permissions.set(permissions)
    return user


@pytest.fixture
def people():
    """The owner and one user of each kind the matrix in docs/security.md names."""
    return {
        "alice": _user("alice", is_staff=False),
        "bob": _user("bob", is_staff=False),
        "staff": _user("staff"),
        "viewer": _user("viewer", "view_session"),
        "group_viewer": _user("group_viewer", "view_session", via_group=True),
        "changer": _user("changer", "change_session"),
        "both": _user("both", "view_session", "change_session"),
        "root": get_user_model().objects.create_superuser("root", password="x"),
        "other_perms": _user("other_perms", "view_publishedevent", "change_publishedevent"),
    }


@pytest.fixture
def support(people):
    support = Support.objects.create(name="support")
    support.sessions.create("private", owner=people["alice"])
    Processor().run_once()
    return support


#: name -> (may read, may send)
MATRIX = {
    "alice": (True, True), "bob": (False, False), "staff": (False, False), "other_perms": (False, False),
    "viewer": (True, False), "group_viewer": (True, False), "changer": (True, True), "both": (True, True),
    "root": (True, True),
}


# -- the chat page ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_the_chat_page_follows_the_matrix(people, support, name):
    may_read, may_send = MATRIX[name]
    web = Client()
    web.force_login(people[name])
    page = web.get(f"/chat/{support.id}/private/")
    missing = web.get(f"/chat/{support.id}/nobody-has-this/")
    assert missing.status_code == 404
    if not may_read:
        # Not yours is exactly does-not-exist: same status, same body, same headers that matter.
        assert page.status_code == 404
        assert page.content == missing.content and page["Content-Type"] == missing["Content-Type"]
        return
    assert page.status_code == 200
    read_only = page.context["read_only"]
    assert read_only is (not may_send)
    if read_only:
        assert '<p class="readonly-note" id="read-only">Read-only: this is alice\'s session.' in page.text
        assert re.search(r'<textarea id="content" name="content"[^>]* disabled placeholder="Read-only', page.text)
        assert '<script id="read-only-flag" type="application/json">true</script>' in page.text
    else:
        assert 'id="read-only"' not in page.text and " disabled placeholder" not in page.text
        assert '<script id="read-only-flag" type="application/json">false</script>' in page.text
        assert ('id="not-yours"' in page.text) is (name != "alice")


def test_an_inactive_owner_is_sent_to_the_login(people, support):
    web = Client()
    web.force_login(people["alice"])
    get_user_model().objects.filter(pk=people["alice"].pk).update(is_active=False)
    response = web.get(f"/chat/{support.id}/private/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# -- the WebSocket ------------------------------------------------------------------------------------------


async def _open(support, user, session_id="private"):
    headers = [ORIGIN] + ([(b"cookie", await sync_to_async(_cookie)(user))] if user else [])
    communicator = WebsocketCommunicator(application, _path(support, session_id), headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _close_code(support, user, session_id="private"):
    communicator = await _open(support, user, session_id)
    output = await communicator.receive_output(timeout=5)
    await communicator.wait()
    assert output["type"] == "websocket.close", output
    return output["code"]


async def _user_messages(thread_id: str) -> list[str]:
    page = await get_async_client().beta.threads.messages.list(thread_id, order="asc", limit=100)
    return [m.content[0].text.value for m in page.data if m.role == "user"]


async def test_who_may_not_read_gets_4404_like_a_missing_id(people, support):
    assert await _close_code(support, None) == 4401
    for name in ("bob", "staff", "other_perms"):
        assert await _close_code(support, people[name]) == 4404
        assert await _close_code(support, people[name], "nobody-has-this") == 4404
    assert await _close_code(support, people["viewer"], "nobody-has-this") == 4404


async def test_view_permission_reads_history_and_frames_but_may_not_send(people, support):
    owner = await _open(support, people["alice"])
    ready = await owner.receive_json_from(timeout=5)
    await owner.send_json_to({"type": "user.message", "content": "before"})
    assert _reply(await _turn(owner)) == "echo: before [context=1]"

    history = [("user", "before"), ("assistant", "echo: before [context=1]")]
    for name in ("viewer", "group_viewer"):
        viewer = await _open(support, people[name])
        seen = await viewer.receive_json_from(timeout=5)
        assert seen["type"] == "session.ready" and seen["session"]["thread_id"] == ready["session"]["thread_id"]
        assert [(m["role"], m["content"]) for m in seen["history"]] == history
        await viewer.send_json_to({"type": "user.message", "content": f"from {name}"})
        error = await viewer.receive_json_from(timeout=5)
        assert error["type"] == "error" and error["code"] == "read_only" and "change_session" in error["message"]
        # Still open: the owner's next turn streams to the viewer too, and bad frames still get their own codes.
        await owner.send_json_to({"type": "user.message", "content": name})
        reply = f"echo: {name} [context={len(history) + 1}]"
        assert _reply(await _turn(viewer)) == _reply(await _turn(owner)) == reply
        history += [("user", name), ("assistant", reply)]
        await viewer.send_to(text_data="not json")
        assert (await viewer.receive_json_from(timeout=5))["code"] == "invalid_json"
        await viewer.disconnect()
    assert await _user_messages(ready["session"]["thread_id"]) == ["before", "viewer", "group_viewer"]
    await owner.disconnect()


@pytest.mark.parametrize("name", ["changer", "both", "root"])
async def test_change_permission_sends_in_the_owners_thread(people, support, name):
    sender = await _open(support, people[name])
    ready = await sender.receive_json_from(timeout=5)
    await sender.send_json_to({"type": "user.message", "content": f"from {name}"})
    assert _reply(await _turn(sender)) == f"echo: from {name} [context=1]"
    await sender.disconnect()
    assert await _user_messages(ready["session"]["thread_id"]) == [f"from {name}"]
