"""Hostile frames on a session's WebSocket: each gets its exact ``error`` frame, never a 1011 close.

Through the project's real ASGI stack (as ``test_websocket``) and once over a
real daphne with the ``websockets`` client; after every bad frame the same
connection still gets its reply to a valid ``user.message``.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import websockets
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client

from betaassi_django.consumers import MAX_DEPTH
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url
from tests.test_websocket import _ready, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

NOT_A_STRING = "content must be a non-empty string"
TOO_DEEP = f"frames nest at most {MAX_DEPTH} levels of arrays and objects"


def _nested(depth: int) -> str:
    """A user.message with one extra field holding arrays nested so the frame is ``depth`` deep."""
    return '{"type": "user.message", "content": "hi", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.fixture
def support(alice):
    support = Support.objects.create(name="support")
    support.sessions.create("chat-1", owner=alice)
    Processor().run_once()
    return support


HOSTILE = [
    # Lone surrogates, as JSON escapes (valid UTF-8 on the wire, not valid Unicode once decoded).
    ('{"type": "user.message", "content": "\\ud800"}', "invalid_content",
     "content must be valid Unicode: a lone surrogate at index 0"),
    ('{"type": "user.message", "content": "ok \\udfff then"}', "invalid_content",
     "content must be valid Unicode: a lone surrogate at index 3"),
    ('{"type": "\\ud800"}', "unknown_type", "unknown frame type '\\ud800'; expected 'user.message' or 'run.cancel'"),
    ('{"type": "user.message", "content": "hi", "\\udc00": 1}', "unknown_field",
     "unknown field '\\udc00'; a user.message has type and content"),
    # Deep nesting: past the parser's recursion limit, and past MAX_DEPTH.
    ("[" * 60_000, "too_deep", TOO_DEEP),
    ('{"type": "user.message", "content": ' + "[" * 60_000, "too_deep", TOO_DEEP),
    ("[" * 500 + "]" * 500, "too_deep", TOO_DEEP),
    (_nested(MAX_DEPTH + 1), "too_deep", TOO_DEEP),
    (_nested(MAX_DEPTH), "unknown_field", "unknown field 'x'; a user.message has type and content"),
    # Huge numbers.
    ('{"type": "user.message", "content": 1' + "0" * 5000 + "}", "invalid_json",
     "frames are JSON objects: a number has too many digits"),
    ('{"type": "user.message", "content": 1e999}', "invalid_content", NOT_A_STRING),
    (f'{{"type": "user.message", "content": {2**70}}}', "invalid_content", NOT_A_STRING),
    # Not an object.
    ("[1, 2]", "invalid_json", "a frame is a JSON object, not an array"),
    ('"user.message"', "invalid_json", "a frame is a JSON object, not a string"),
    ("12", "invalid_json", "a frame is a JSON object, not a number"),
    ("null", "invalid_json", "a frame is a JSON object, not null"),
    ("true", "invalid_json", "a frame is a JSON object, not true"),
    ("{", "invalid_json", "frames are JSON objects: Expecting property name enclosed in double quotes at character 1"),
    # Content of the wrong type or value.
    ('{"type": "user.message", "content": null}', "invalid_content", NOT_A_STRING),
    ('{"type": "user.message", "content": true}', "invalid_content", NOT_A_STRING),
    ('{"type": "user.message", "content": ["hi"]}', "invalid_content", NOT_A_STRING),
    ('{"type": "user.message", "content": {"text": "hi"}}', "invalid_content", NOT_A_STRING),
    ('{"type": "user.message", "content": "a\\u0000b"}', "invalid_content",
     "content must not contain null characters"),
    ('{"type": ["user.message"], "content": "hi"}', "unknown_type",
     "unknown frame type ['user.message']; expected 'user.message' or 'run.cancel'"),
    # Unknown fields (a forged thread or owner is refused, not ignored).
    ('{"type": "user.message", "content": "hi", "thread_id": "thread_abc"}', "unknown_field",
     "unknown field 'thread_id'; a user.message has type and content"),
    ('{"type": "user.message", "content": "hi", "owner": 1, "assistant_id": "x"}', "unknown_field",
     "unknown field 'assistant_id'; a user.message has type and content"),
    # Binary frames, garbage or not.
    (b"\xff\xfe\x00\xc3(garbage", "bad_frame", "frames are JSON text, not binary"),
    (b'{"type": "user.message", "content": "hi"}', "bad_frame", "frames are JSON text, not binary"),
    # A raw lone surrogate in a text frame: impossible on the wire (UTF-8), possible for an in-process sender.
    ('{"type": "user.message", "content": "\ud800"}', "bad_frame", "frames are UTF-8 text"),
]


@pytest.mark.parametrize(("frame", "code", "message"), HOSTILE, ids=range(len(HOSTILE)))
async def test_a_hostile_frame_gets_its_error_and_the_next_turn_completes(support, alice, frame, code, message):
    communicator, _ = await _ready(support, alice)
    if isinstance(frame, bytes):
        await communicator.send_to(bytes_data=frame)
    else:
        await communicator.send_to(text_data=frame)
    assert await communicator.receive_json_from(timeout=10) == {"type": "error", "code": code, "message": message}
    await communicator.send_json_to({"type": "user.message", "content": "still here"})
    frames = await _turn(communicator)
    assert frames[0]["type"] == "message.created" and frames[0]["message"]["content"] == "still here"
    assert _reply(frames) == "echo: still here [context=1]"
    await communicator.disconnect()


async def test_valid_unicode_beyond_the_bmp_is_a_turn(support, alice):
    """Surrogate pairs (an emoji as a JSON escape) are valid: only lone surrogates are refused."""
    communicator, _ = await _ready(support, alice)
    await communicator.send_to(text_data='{"type": "user.message", "content": "hi \\ud83d\\ude00"}')
    assert _reply(await _turn(communicator)) == "echo: hi \U0001F600 [context=1]"
    await communicator.disconnect()


def view_session() -> Permission:
    """The permission to see every session (and so to name a new session's id on the start form)."""
    return Permission.objects.get(codename="view_session", content_type__app_label="betaassi_django")


def test_the_start_form_cannot_store_a_lone_surrogate(alice, processor):
    """The chat page's other input, the start-a-session form: bytes of a surrogate arrive as U+FFFD, not as one,
    and are refused (the id field is there for users who may see every session id; the model is a choice)."""
    support = Support.objects.create(name="support")
    alice.user_permissions.add(view_session())
    web = Client()
    web.force_login(alice)
    surrogate = "%ED%A0%80"  # "\ud800" as a lenient UTF-8 encoder writes it: invalid UTF-8
    form = "application/x-www-form-urlencoded"
    refused = web.post("/sessions/start/", f"assistant={support.id}&session_id=s{surrogate}&kind=default", form)
    assert refused.status_code == 400 and "Use 1 to 60 letters" in refused.text
    refused = web.post("/sessions/start/", f"assistant={support.id}&session_id=s-1&kind=default&model=m{surrogate}",
                       form)
    assert refused.status_code == 400
    assert refused.context["form"].errors["model"] == [
        "Select a valid choice. m\ufffd\ufffd\ufffd is not one of the available choices."]
    started = web.post("/sessions/start/", f"assistant={support.id}&session_id=s-1&kind=default", form)
    assert started.status_code == 302 and started["Location"] == f"/chat/{support.id}/s-1/"
    assert Session.objects.get(assistant_id=support.id, session_id="s-1").model is None
    assert web.get(started["Location"]).status_code == 200


# -- over a real daphne ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daphne():
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.01"}
    with scratch_database_url(_database_url()) as url, LiveServer(url, env=env, cwd=settings.BASE_DIR) as server:
        yield server, server.login(*server.demo_login())


def test_hostile_frames_over_daphne_get_errors_and_the_connection_stays_open(daphne):
    server, web = daphne
    page = web.get("/")
    assistant_id = page.text.split('<option value="', 1)[1].split('"', 1)[0]
    started = web.post("/sessions/start/", data={"assistant": assistant_id,
                                                 "kind": "default", "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert started.status_code == 302  # the demo user's session gets a random id
    session_id = re.fullmatch(rf"/chat/{assistant_id}/(chat-[0-9a-f]{{16}})/", started.headers["location"])[1]
    frames = [('{"type": "user.message", "content": "\\ud800"}',
               ("invalid_content", "content must be valid Unicode: a lone surrogate at index 0")),
              ("[" * 60_000, ("too_deep", TOO_DEEP)),
              (b"\xff\xfe\x00garbage", ("bad_frame", "frames are JSON text, not binary")),
              ('{"type": "user.message", "content": "hi", "thread_id": "thread_x"}',
               ("unknown_field", "unknown field 'thread_id'; a user.message has type and content"))]

    async def talk() -> tuple[list[dict], list[dict]]:
        path = f"/ws/assistants/{assistant_id}/sessions/{session_id}/"
        async with websockets.connect(f"ws://127.0.0.1:{server.port}{path}",
                                      additional_headers=server.websocket_headers(web)) as socket:
            assert json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] == "session.ready"
            errors = []
            for frame, _ in frames:
                await socket.send(frame)
                errors.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
            await socket.send(json.dumps({"type": "user.message", "content": "after all that"}))
            turn = []
            while not turn or turn[-1]["type"] not in ("message.completed", "run.failed"):
                turn.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
            return errors, turn

    async def invalid_utf8() -> int | None:
        """Invalid UTF-8 in a text frame never reaches the app: daphne's WebSocket layer (autobahn) fails the
        connection as RFC 6455 section 8.1 says, by dropping it (1006 at the client)."""
        path = f"/ws/assistants/{assistant_id}/sessions/{session_id}/"
        async with websockets.connect(f"ws://127.0.0.1:{server.port}{path}",
                                      additional_headers=server.websocket_headers(web)) as socket:
            assert json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] == "session.ready"
            await socket.send(b'{"type": "user.message", "content": "\xed\xa0\x80"}', text=True)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 20)
            return socket.close_code

    assert asyncio.run(invalid_utf8()) == 1006
    errors, turn = asyncio.run(talk())  # then a new connection works as ever
    assert errors == [{"type": "error", "code": code, "message": message} for _, (code, message) in frames]
    assert [f["type"] for f in turn][:2] == ["message.created", "run.started"]
    assert turn[-1]["type"] == "message.completed"
    assert turn[-1]["message"]["content"] == "echo: after all that [context=1]"
    assert "Exception inside application" not in server.log()
