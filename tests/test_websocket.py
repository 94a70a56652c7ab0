"""The WebSocket protocol of sessions (the contract: docs/websocket.md), through the project's real ASGI stack.

Connections go through ``project.asgi.application``: origin validation, Django
session cookies read by AuthMiddlewareStack, the URL router and the consumer;
replies come from the embedded API's run engine with the echo responder.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from betaassi_django import consumers, turns
from betaassi_django.client import get_async_client, get_client
from betaassi_django.publishing.processor import Processor
from project.asgi import application
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
def support(alice):
    support = Support.objects.create(name="support")
    support.sessions.create("chat-1", owner=alice)
    support.sessions.create("short", owner=alice, kind="manyshots", context_messages=2)
    Processor().run_once()
    return support


def _path(support, session_id="chat-1") -> str:
    return f"/ws/assistants/{support.id}/sessions/{session_id}/"


async def _connect(support, user=None, session_id="chat-1", headers=None):
    headers = headers if headers is not None else [ORIGIN] + ([(b"cookie", await sync_to_async(_cookie)(user))]
                                                              if user else [])
    communicator = WebsocketCommunicator(application, _path(support, session_id), headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _ready(support, user, session_id="chat-1"):
    communicator = await _connect(support, user, session_id)
    ready = await communicator.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready"
    return communicator, ready


async def _turn(communicator) -> list[dict]:
    """Frames until the turn ends."""
    frames = []
    while not frames or frames[-1]["type"] not in ("message.completed", "run.failed"):
        frames.append(await communicator.receive_json_from(timeout=10))
    return frames


def _reply(frames: list[dict]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "message.delta")


async def test_a_turn_streams_the_reply(support, alice):
    communicator, ready = await _ready(support, alice)
    assert ready["history"] == []
    assert ready["session"] == {
        "assistant_id": support.id, "session_id": "chat-1", "kind": "default", "context_messages": None,
        "model": None, "thread_id": ready["session"]["thread_id"], "created_at": ready["session"]["created_at"],
        "touched_at": None}
    await communicator.send_json_to({"type": "user.message", "content": "hello there"})
    frames = await _turn(communicator)
    created, started, *deltas, completed = frames
    assert created["type"] == "message.created"
    assert (created["message"]["role"], created["message"]["content"]) == ("user", "hello there")
    assert created["message"]["id"].startswith("msg_")
    assert started == {"type": "run.started", "run_id": started["run_id"]}
    assert {d["type"] for d in deltas} == {"message.delta"} and {d["run_id"] for d in deltas} == {started["run_id"]}
    assert _reply(frames) == "echo: hello there [context=1]"
    assert completed["type"] == "message.completed" and completed["run_id"] == started["run_id"]
    assert (completed["message"]["role"], completed["message"]["content"], completed["message"]["run_id"]) == (
        "assistant", "echo: hello there [context=1]", started["run_id"])
    await communicator.disconnect()

    again, ready = await _ready(support, alice)  # history on reconnect, oldest first
    assert [(m["role"], m["content"]) for m in ready["history"]] == [
        ("user", "hello there"), ("assistant", "echo: hello there [context=1]")]
    assert ready["session"]["touched_at"] is not None
    await again.disconnect()


async def test_the_session_truncation_applies(support, alice):
    communicator, _ = await _ready(support, alice, "short")
    replies = []
    for text in ("one", "two", "three"):
        await communicator.send_json_to({"type": "user.message", "content": text})
        replies.append(_reply(await _turn(communicator)))
    assert replies == ["echo: one [context=1]", "echo: two [context=2]", "echo: three [context=2]"]
    await communicator.disconnect()


async def test_who_may_connect(support, alice):
    bob = await get_user_model().objects.acreate_user("bob", password="x")
    staff = await get_user_model().objects.acreate_user("staff", password="x", is_staff=True)

    async def close_code(user, session_id="chat-1", headers=None):
        communicator = await _connect(support, user, session_id, headers)
        output = await communicator.receive_output(timeout=5)
        await communicator.wait()
        return output

    assert await close_code(None) == {"type": "websocket.close", "code": 4401}
    # Not yours is answered as does not exist (tests/test_access.py has the permissions).
    assert await close_code(bob) == {"type": "websocket.close", "code": 4404}
    assert await close_code(staff) == {"type": "websocket.close", "code": 4404}  # is_staff alone grants nothing
    assert await close_code(alice, "nobody-s") == {"type": "websocket.close", "code": 4404}

    foreign = WebsocketCommunicator(application, _path(support), headers=[
        (b"origin", b"http://evil.example"), (b"cookie", await sync_to_async(_cookie)(alice))])
    connected, _ = await foreign.connect()
    assert not connected  # AllowedHostsOriginValidator refuses the handshake


async def test_messages_sent_during_a_run_are_answered_in_order_on_every_connection(support, alice, settings):
    settings.BETAASSI_ECHO_DELAY = 0.02
    first, _ = await _ready(support, alice)
    second, _ = await _ready(support, alice)
    await first.send_json_to({"type": "user.message", "content": "a"})
    await second.send_json_to({"type": "user.message", "content": "b"})
    await first.send_json_to({"type": "user.message", "content": "c"})
    seen = []
    for communicator in (first, second):
        frames = []
        for _ in range(3):
            frames += await _turn(communicator)
        seen.append(frames)
    assert seen[0] == seen[1]  # every connection receives the same stream
    # Across connections the server's arrival order decides; each reply answers its own message, in turn.
    created = [f["message"]["content"] for f in seen[0] if f["type"] == "message.created"]
    assert sorted(created) == ["a", "b", "c"] and created.index("a") < created.index("c")
    completed = [f["message"]["content"] for f in seen[0] if f["type"] == "message.completed"]
    assert completed == [f"echo: {text} [context={n}]" for text, n in zip(created, (1, 3, 5), strict=True)]
    for communicator in (first, second):
        await communicator.disconnect()


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('{"content": "no type"}', "unknown_type"),
    ('{"type": "user.dance"}', "unknown_type"),
    ('{"type": "user.message"}', "invalid_content"),
    ('{"type": "user.message", "content": ""}', "invalid_content"),
    ('{"type": "user.message", "content": "   "}', "invalid_content"),
    ('{"type": "user.message", "content": 42}', "invalid_content"),
    (json.dumps({"type": "user.message", "content": "é" * (consumers.MAX_CONTENT_BYTES // 2 + 1)}, ensure_ascii=False),
     "content_too_long"),
    (json.dumps({"type": "user.message", "content": "x" * 10, "pad": "y" * consumers.MAX_FRAME_BYTES}),
     "frame_too_large"),
    (b"\x00binary", "bad_frame"),
])
async def test_bad_frames_get_an_error_and_the_connection_stays_open(support, alice, frame, code):
    communicator, _ = await _ready(support, alice)
    if isinstance(frame, bytes):
        await communicator.send_to(bytes_data=frame)
    else:
        await communicator.send_to(text_data=frame)
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await communicator.send_json_to({"type": "user.message", "content": "still here"})
    assert _reply(await _turn(communicator)) == "echo: still here [context=1]"
    await communicator.disconnect()


async def test_content_at_the_limit_is_accepted(support, alice):
    communicator, _ = await _ready(support, alice)
    content = "x" * consumers.MAX_CONTENT_BYTES
    await communicator.send_json_to({"type": "user.message", "content": content})
    assert _reply(await _turn(communicator)) == f"echo: {content} [context=1]"
    await communicator.disconnect()


async def test_a_flood_is_rate_limited_then_closed_and_other_sessions_carry_on(support, alice, settings):
    settings.BETAASSI_ECHO_DELAY = 0.05
    flooder, _ = await _ready(support, alice)
    calm, _ = await _ready(support, alice, "short")
    for _ in range(consumers.RATE_BURST + consumers.FLOOD_CLOSE_AFTER):
        await flooder.send_to(text_data='{"type": "ping"}')
    codes = []
    while True:
        output = await flooder.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            assert output["code"] == consumers.CLOSE_FLOOD
            break
        codes.append(json.loads(output["text"])["code"])
    assert codes == ["unknown_type"] * consumers.RATE_BURST + ["rate_limited"] * (consumers.FLOOD_CLOSE_AFTER - 1)

    await calm.send_json_to({"type": "user.message", "content": "fine"})
    assert _reply(await _turn(calm)) == "echo: fine [context=1]"
    await calm.disconnect()


async def test_too_many_waiting_messages_are_refused(support, alice, settings):
    settings.BETAASSI_ECHO_DELAY = 0.05
    communicator, _ = await _ready(support, alice)
    # The first reply streams 60 words 50 ms apart (3 s), so it is still running when the last message arrives:
    # with a reply of three words, a loaded CI machine finished it before the queue was full (no "busy").
    contents = ["m0" + " word" * 60] + [f"m{index}" for index in range(1, turns.MAX_PENDING_TURNS + 2)]
    for content in contents:  # one runs, MAX_PENDING_TURNS wait, one is refused
        await communicator.send_json_to({"type": "user.message", "content": content})
    frames = []
    while len([f for f in frames if f["type"] == "message.completed"]) < turns.MAX_PENDING_TURNS + 1:
        frames.append(await communicator.receive_json_from(timeout=20))
    assert [f["code"] for f in frames if f["type"] == "error"] == ["busy"]
    created = [f["message"]["content"] for f in frames if f["type"] == "message.created"]
    assert created == contents[: turns.MAX_PENDING_TURNS + 1]
    await communicator.disconnect()


async def test_backend_errors_end_the_turn_with_run_failed(support, alice):
    communicator, ready = await _ready(support, alice)
    await sync_to_async(get_client().beta.threads.delete)(ready["session"]["thread_id"])
    await communicator.send_json_to({"type": "user.message", "content": "anyone?"})
    failed = await communicator.receive_json_from(timeout=5)
    assert failed["type"] == "run.failed" and failed["run_id"] is None
    assert ready["session"]["thread_id"] in failed["error"]
    await communicator.disconnect()


async def test_a_failed_run_is_reported_with_its_error(support, alice, settings):
    settings.BETAASSI_RESPONDER = "openai"
    settings.BETAASSI_UPSTREAM_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    settings.BETAASSI_UPSTREAM_API_KEY = "sk-test"
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "hi"})
    frames = await _turn(communicator)
    assert [f["type"] for f in frames] == ["message.created", "run.started", "run.failed"]
    assert frames[-1]["run_id"] == frames[1]["run_id"] and frames[-1]["error"]
    await communicator.disconnect()


async def test_updates_and_deletion_are_pushed(support, alice):
    communicator, _ = await _ready(support, alice)
    for text, context in (("one", 1), ("two", 3)):  # the whole history
        await communicator.send_json_to({"type": "user.message", "content": text})
        assert _reply(await _turn(communicator)) == f"echo: {text} [context={context}]"
    await sync_to_async(support.sessions.update)("chat-1", kind="manyshots", context_messages=2, model="m-2")
    await sync_to_async(Processor().run_once)()
    updated = await communicator.receive_json_from(timeout=5)
    assert updated["type"] == "session.updated"
    assert (updated["session"]["kind"], updated["session"]["context_messages"], updated["session"]["model"]) == (
        "manyshots", 2, "m-2")
    # The connection's next turn runs with the session as updated: its kind and its model.
    await communicator.send_json_to({"type": "user.message", "content": "three"})
    frames = await _turn(communicator)
    assert _reply(frames) == "echo: three [context=2]"
    run = await get_async_client().beta.threads.runs.retrieve(frames[1]["run_id"], thread_id=updated["session"][
        "thread_id"])
    assert (run.model, run.truncation_strategy.type, run.truncation_strategy.last_messages) == (
        "m-2", "last_messages", 2)

    await sync_to_async(support.sessions.delete)("chat-1")
    await sync_to_async(Processor().run_once)()
    assert await communicator.receive_json_from(timeout=5) == {"type": "session.deleted"}
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1000}


async def test_a_late_notice_of_what_the_connection_already_has_is_not_pushed(support, alice):
    """The processor's notices cross processes through the channel layer and can arrive after a connection opened
    with the session already as it is: its creation's notice, relayed late, pushes nothing; a change does."""
    from betaassi_django.models import PublishedEvent
    from betaassi_django.publishing import notify

    communicator, ready = await _ready(support, alice)
    created = await PublishedEvent.objects.filter(session_id="chat-1", op="session.create").afirst()
    await sync_to_async(notify.broadcast)(support.id, [
        {"event_id": created.event_id, "op": "session.create", "session_id": "chat-1", "status": "applied"}])
    assert await communicator.receive_nothing(timeout=0.5)
    await sync_to_async(support.sessions.update)("chat-1", kind="oneshot")
    await sync_to_async(Processor().run_once)()
    updated = await communicator.receive_json_from(timeout=5)
    assert updated == {"type": "session.updated", "session": {**ready["session"], "kind": "oneshot"}}
    await communicator.disconnect()


async def test_other_sessions_events_are_not_pushed(support, alice):
    communicator, _ = await _ready(support, alice)
    await sync_to_async(support.sessions.update)("short", context_messages=5)
    await sync_to_async(Processor().run_once)()
    await asyncio.sleep(0.2)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()
