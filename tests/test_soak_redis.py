"""Soak tests of the production path: two daphne processes and the processor as its own process, over Redis and
PostgreSQL, idle for a minute, then a Redis restart under a connected session.

They always run on a scratch PostgreSQL database and a private redis-server (whatever DATABASE_URL says), so CI
runs them once, in its PostgreSQL pass. One minute of idleness serves every test: the module's stack connects,
waits ``IDLE_SECONDS``, and the tests then check what the idle minute must not have broken.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import start_session_from_page
from tests.redis_server import RedisServer

pytestmark = pytest.mark.soak

IDLE_SECONDS = 60
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
#: Publishes a session from this (another) process and prints its status, how long the publish took (the
#: publisher's own API calls), and how long from then (committed, wake-up sent) until the processor recorded it.
#: The process first warms up (its API client, database connection and channel layer: costs of a fresh process,
#: not of the wake-up), as a long-running publisher such as a daphne is.
PUBLISH = """
import time
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from betaassi_django.client import get_client
from betaassi_django.models import Assistant, PublishedEvent
assistant, owner = Assistant.objects.get(id={assistant_id!r}), get_user_model().objects.get(username="demo")
get_client().beta.assistants.retrieve(assistant.id)
async_to_sync(get_channel_layer().group_send)("betaassi.warm-up", {{"type": "warm.up"}})
started = time.perf_counter()
event_id = assistant.sessions.create({session_id!r}, owner=owner)
published = time.perf_counter()
while time.perf_counter() - published < {timeout}:
    status = PublishedEvent.objects.filter(event_id=event_id).values_list("status", flat=True).first()
    if status:
        break
    time.sleep(0.002)
print(status, published - started, time.perf_counter() - published)
"""


class Loop:
    """An event loop in a thread, so WebSocket connections outlive one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Chat:
    """One chat page's connection: like the page, it reconnects with back-off (0.5 s doubling, at most 10 s)."""

    def __init__(self, server: LiveServer, web, path: str) -> None:
        self.url = f"ws://127.0.0.1:{server.port}{path}"
        self.headers = server.websocket_headers(web)
        self.socket = None
        self.connections = 0

    async def connect(self) -> dict:
        retry = 0
        while True:
            try:
                self.socket = await websockets.connect(self.url, additional_headers=self.headers, ping_interval=None)
                ready = json.loads(await asyncio.wait_for(self.socket.recv(), 20))
                self.connections += 1
                return ready
            except (OSError, websockets.ConnectionClosed, websockets.InvalidStatus):
                await asyncio.sleep(min(10, 0.5 * 2**retry))
                retry += 1

    async def send(self, content: str) -> None:
        if self.socket.state is not websockets.State.OPEN:
            await self.connect()
        await self.socket.send(json.dumps({"type": "user.message", "content": content}))

    async def frames_until_completed(self, timeout: float = 30) -> list[dict]:
        """Frames up to the next ``message.completed``, reconnecting as the page would if the socket closes."""
        frames: list[dict] = []
        deadline = time.monotonic() + timeout
        while not frames or frames[-1]["type"] != "message.completed":
            try:
                frames.append(json.loads(await asyncio.wait_for(self.socket.recv(), deadline - time.monotonic())))
            except websockets.ConnectionClosed:
                await self.connect()
        return frames

    async def closed(self) -> bool:
        return self.socket.state is not websockets.State.OPEN


def _wait_for_line(log: Path, line: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _processor(server: LiveServer, log: Path) -> subprocess.Popen:
    """``process_publish_queue`` as its own process; its poll (600 s) never comes, so only wake-ups drive it."""
    return subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", "--interval", "600"],
                            cwd=server.cwd, env=server.env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _publish(server: LiveServer, assistant_id: str, session_id: str, timeout: float = 10) -> tuple[str, float]:
    """Publish from another process: the event's status, and the seconds from its wake-up to its being applied."""
    out = server.manage("shell", "-v", "0", "-c",
                        PUBLISH.format(assistant_id=assistant_id, session_id=session_id, timeout=timeout))
    status, publishing, applying = out.split()
    publishing_ms, applying_ms = float(publishing) * 1000, float(applying) * 1000
    print(f"\n{session_id}: publish {publishing_ms:.1f} ms, wake-up -> applied {applying_ms:.1f} ms")
    return status, float(applying)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Redis, PostgreSQL, two daphnes, the processor; two connections to one session on each daphne, idle."""
    logs = tmp_path_factory.mktemp("soak")
    loop = Loop()
    with RedisServer() as redis_server, scratch_database_url(POSTGRES_URL) as url:
        env = {"REDIS_URL": redis_server.url, "BETAASSI_ECHO_DELAY": "0.01"}
        with (LiveServer(url, env=env, cwd=settings.BASE_DIR) as first,
              LiveServer(url, env=env, cwd=settings.BASE_DIR) as second):
            processor = _processor(first, logs / "processor.log")
            try:
                login = first.demo_login()
                webs = [first.login(*login), second.login(*login)]
                # The processor, woken through Redis, applies it.
                assistant_id, session_id = start_session_from_page(webs[0])
                path = f"/ws/assistants/{assistant_id}/sessions/{session_id}/"
                chats = [Chat(server, web, path) for server, web in [(first, webs[0]), (second, webs[1])] * 2]
                for chat in chats:
                    assert loop.run(chat.connect())["type"] == "session.ready"
                time.sleep(IDLE_SECONDS)
                yield {"servers": (first, second), "chats": chats, "loop": loop, "assistant_id": assistant_id,
                       "redis": redis_server, "processor_log": logs / "processor.log"}
            finally:
                processor.terminate()
                processor.wait(10)
                loop.close()


def test_after_a_minute_idle_a_wake_up_from_another_process_applies_an_event_within_100ms(stack):
    status, seconds = _publish(stack["servers"][1], stack["assistant_id"], "woken")
    assert status == "applied"
    assert seconds < 0.1
    assert "wake-up listener" not in stack["processor_log"].read_text()


def test_after_a_minute_idle_a_turn_reaches_every_connection_on_both_daphnes(stack):
    chats, loop = stack["chats"], stack["loop"]
    assert [loop.run(chat.closed()) for chat in chats] == [False] * 4
    loop.run(chats[0].send("after an idle minute"))
    seen = [loop.run(chat.frames_until_completed()) for chat in chats]
    assert all(frames == seen[0] for frames in seen)  # the same frames on every connection, on both servers
    assert "message.delta" in [f["type"] for f in seen[0]]
    assert seen[0][-1]["message"]["content"] == "echo: after an idle minute [context=1]"
    assert [chat.connections for chat in chats] == [1] * 4  # none closed during the minute
    for server in stack["servers"]:
        assert "Exception inside application" not in server.log(), server.log()


def test_a_session_recovers_from_a_redis_restart_without_a_reload(stack):
    chats, loop, redis_server = stack["chats"], stack["loop"], stack["redis"]
    redis_server.stop()
    time.sleep(1)
    redis_server.start()
    # Each process notices, says so once, and once Redis answers joins its groups again.
    logs = [server.log_path for server in stack["servers"]] + [stack["processor_log"]]
    for log in logs:
        assert _wait_for_line(log, "channel layer reconnected to Redis after "), log.read_text()[-5000:]
        text = log.read_text()
        assert text.count("channel layer lost Redis (ConnectionError: ") == 1, text[-5000:]
        assert text.count("channel layer reconnected to Redis after ") == 1

    # The next turn reaches every connection of the session, on both servers, with no page reload.
    loop.run(chats[1].send("after the restart"))
    try:
        seen = [loop.run(chat.frames_until_completed()) for chat in chats]
    except TimeoutError:
        pytest.fail("a connection missed the turn:\n" + "\n".join(log.read_text()[-3000:] for log in logs))
    assert all(frames == seen[0] for frames in seen)
    assert seen[0][-1]["message"]["content"] == "echo: after the restart [context=3]"
    assert [chat.connections for chat in chats] == [1] * 4  # the WebSockets stayed open through it

    # The processor's wake-up listener is back too: a wake-up again applies an event at once (its poll is 600 s).
    status, seconds = _publish(stack["servers"][0], stack["assistant_id"], "after-restart")
    assert (status, seconds < 0.1) == ("applied", True)
    for server in stack["servers"]:
        assert "Exception inside application" not in server.log(), server.log()
