"""What the WebSocket path costs beside a turn's own work (issue 16), counted exactly.

A turn's frames reach this process's connections directly, encoded once (``groups.listen``), not through the
in-memory channel layer; a layer that crosses processes still carries them, marked with the process's
``groups.origin()`` so each local connection gets each frame once. The consumer's database work (admission,
re-checks, touches) runs on threads that keep their connection: after a first turn, turns open none. The
periodic re-check reads each login once per round, however many connections it holds.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.db import connection
from django.db.backends.signals import connection_created

from betaassi_django import access, frames, groups, ws_database
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.test_websocket import _cookie, _ready, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def support(alice):
    support = Support.objects.create(name="support")
    support.sessions.create("chat-1", owner=alice)
    support.sessions.create("short", owner=alice)
    Processor().run_once()
    return support

FRAME_TYPES = ["message.created", "run.started", "message.delta", "message.completed"]


def _kinds(frames: list[dict]) -> list[str]:
    """Frame types in order, a run of deltas as one (their number depends on the coalescing)."""
    kinds: list[str] = []
    for frame in frames:
        if not kinds or kinds[-1] != frame["type"] or frame["type"] != "message.delta":
            kinds.append(frame["type"])
    return kinds


class CrossProcessLayer(BaseChannelLayer):
    """A layer that is not the in-memory one (as Redis is not): it delivers through an in-memory layer, and
    records every group_send."""

    extensions = ["groups", "flush"]
    sent: list[tuple[str, dict]] = []

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inner = InMemoryChannelLayer()

    async def send(self, channel, message):
        await self.inner.send(channel, message)

    async def receive(self, channel):
        return await self.inner.receive(channel)

    async def new_channel(self, prefix="specific."):
        return await self.inner.new_channel(prefix)

    async def group_add(self, group, channel):
        await self.inner.group_add(group, channel)

    async def group_discard(self, group, channel):
        await self.inner.group_discard(group, channel)

    async def group_send(self, group, message):
        type(self).sent.append((group, message))
        await self.inner.group_send(group, message)

    async def flush(self):
        await self.inner.flush()


async def test_in_process_frames_reach_every_connection_without_the_in_memory_layer(support, alice, monkeypatch):
    sends: list[str] = []
    real = InMemoryChannelLayer.group_send

    async def counted(self, group, message):
        sends.append(group)
        await real(self, group, message)

    monkeypatch.setattr(InMemoryChannelLayer, "group_send", counted)
    first, _ = await _ready(support, alice)
    second, _ = await _ready(support, alice)
    await first.send_json_to({"type": "user.message", "content": "hello"})
    mine, theirs = await _turn(first), await _turn(second)
    assert mine == theirs
    assert _kinds(mine) == FRAME_TYPES and _reply(mine) == "echo: hello [context=1]"
    # No frame of the turn went through the layer (a login's save pushes ``account.changed`` to the user's group).
    assert [group for group in sends if group.startswith("betaassi.session.")] == []
    await first.disconnect()
    await second.disconnect()


async def test_through_a_layer_across_processes_each_frame_arrives_once(support, alice, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_ws_cost.CrossProcessLayer"}}
    CrossProcessLayer.sent = []
    first, _ = await _ready(support, alice)
    second, _ = await _ready(support, alice)
    await first.send_json_to({"type": "user.message", "content": "hello"})
    mine, theirs = await _turn(first), await _turn(second)
    assert mine == theirs and _kinds(mine) == FRAME_TYPES
    frames = [m for _, m in CrossProcessLayer.sent if m["type"] == "session.frame"]
    assert [m["frame"] for m in frames] == mine  # every frame still goes to the group, for other processes
    assert {m["origin"] for m in frames} == {groups.origin()}
    # A frame of another process's turn reaches both connections, once.
    other = {"type": "run.failed", "run_id": None, "error": "elsewhere"}
    group = next(g for g, m in CrossProcessLayer.sent if m["type"] == "session.frame")
    await get_channel_layer().group_send(group, {"type": "session.frame", "frame": other, "origin": "another"})
    assert await first.receive_json_from(timeout=5) == other
    assert await second.receive_json_from(timeout=5) == other
    assert await first.receive_nothing(timeout=0.2) and await second.receive_nothing(timeout=0.2)
    await first.disconnect()
    await second.disconnect()


async def test_websocket_turns_open_no_database_connection_after_the_first(support, alice):
    """SQLite: the path's threads keep their connections. Elsewhere they take one from the pool for each call
    (Django signals each checkout as a new connection) and hand it back after it: none is held between calls."""
    socket, _ = await _ready(support, alice)
    for n in range(2):  # the second overlaps the first's touch, as every later turn does its predecessor's
        await socket.send_json_to({"type": "user.message", "content": f"warm {n}"})
        assert _reply(await _turn(socket)) == f"echo: warm {n} [context={2 * n + 1}]"
    opened: list[str] = []

    def record(sender, connection, **kwargs) -> None:
        # The run engine's heartbeat opens and closes one of its own every few seconds, turns or not.
        if not threading.current_thread().name.startswith("betaassi-run-heartbeat"):
            opened.append(connection.alias)

    connection_created.connect(record)
    try:
        for n in range(3):
            await socket.send_json_to({"type": "user.message", "content": f"turn {n}"})
            assert _reply(await _turn(socket)) == f"echo: turn {n} [context={2 * n + 5}]"
    finally:
        connection_created.disconnect(record)
    await socket.disconnect()
    if connection.vendor == "sqlite":
        assert opened == []
    else:
        assert await ws_database.on_database(lambda: connection.connection is None) is True


def test_the_periodic_recheck_reads_each_login_once(support, alice, django_assert_num_queries):
    session = Session.objects.get(session_id="chat-1")
    key = _cookie(alice).decode().split("=", 1)[1]
    with django_assert_num_queries(2):  # the Django session and the user, for five connections of one login
        states = access.connection_states([(key, alice.pk, session)] * 5)
    assert states == [access.State.SEND] * 5
    with django_assert_num_queries(3):  # a gone login costs its one lookup (a malformed key: none)
        states = access.connection_states([(key, alice.pk, session), ("0" * 32, alice.pk, session),
                                           (key, alice.pk, session)])
    assert states == [access.State.SEND, access.State.NO_LOGIN, access.State.SEND]


async def test_touches_that_arrive_together_are_written_in_one_transaction(support, monkeypatch):
    batches: list[list[str]] = []
    real = ws_database._touch_all

    def recorded(sessions: list) -> None:
        batches.append([s.session_id for s in sessions])
        real(sessions)

    monkeypatch.setattr(ws_database, "_touch_all", recorded)
    sessions = await sync_to_async(list)(Session.objects.filter(session_id__in=["chat-1", "short"]).order_by("id"))
    for session in sessions:
        ws_database.touch_soon(session)
    for _ in range(100):
        if not ws_database._touches:
            break
        await asyncio.sleep(0.02)
    assert batches == [["chat-1", "short"]]
    stored = await sync_to_async(list)(Session.objects.filter(session_id__in=["chat-1", "short"])
                                       .values_list("touched_at", flat=True))
    assert None not in stored


async def test_a_connection_joining_mid_turn_gets_session_ready_first_then_the_rest(support, alice, settings,
                                                                                  monkeypatch):
    """Frames delivered directly while the joining connection reads its history wait until ``session.ready``."""
    settings.BETAASSI_ECHO_DELAY = 0.05
    first, _ = await _ready(support, alice)
    await first.send_json_to({"type": "user.message", "content": "one two three four five six"})
    seen = [await first.receive_json_from(timeout=5)]
    while seen[-1]["type"] != "message.delta":
        seen.append(await first.receive_json_from(timeout=5))
    real_history = frames.history

    async def slow_history(thread_id: str, limit: int = frames.HISTORY_MESSAGES):
        await asyncio.sleep(0.3)  # frames of the running turn arrive meanwhile
        return await real_history(thread_id, limit)

    monkeypatch.setattr(frames, "history", slow_history)
    second, _ = await _ready(support, alice)  # asserts its first frame is session.ready
    theirs = await _turn(second)
    mine = seen + await _turn(first)
    assert len(theirs) >= 2 and theirs[0]["type"] == "message.delta"  # some arrived during the history read
    assert mine[-len(theirs):] == theirs  # nothing lost or reordered after it joined
    await first.disconnect()
    await second.disconnect()
