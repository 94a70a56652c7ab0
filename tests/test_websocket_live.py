"""Two daphne processes sharing one database and channels-redis: one client on each, same session."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url, start_session_from_page

REDIS_URL = "redis://127.0.0.1:6379/4"


@pytest.fixture(scope="module")
def servers():
    env = {"REDIS_URL": REDIS_URL, "BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.01"}
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as first,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as second,
    ):
        login = first.demo_login()
        # One database, so the login works on both servers.
        yield first, second, [server.login(*login) for server in (first, second)]


async def _collect(socket, turns: int) -> list[dict]:
    frames = []
    while sum(f["type"] == "message.completed" for f in frames) < turns:
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
    return frames


def test_both_servers_stream_the_same_frames(servers):
    first, second, webs = servers
    assistant_id = start_session_from_page(webs[0], "shared")
    path = f"/ws/assistants/{assistant_id}/sessions/shared/"

    async def talk():
        async with (
            websockets.connect(f"ws://127.0.0.1:{first.port}{path}",
                               additional_headers=first.websocket_headers(webs[0])) as one,
            websockets.connect(f"ws://127.0.0.1:{second.port}{path}",
                               additional_headers=second.websocket_headers(webs[1])) as two,
        ):
            for socket in (one, two):
                assert json.loads(await socket.recv())["type"] == "session.ready"
            await one.send(json.dumps({"type": "user.message", "content": "from one"}))
            await two.send(json.dumps({"type": "user.message", "content": "from two"}))
            return await asyncio.gather(_collect(one, 2), _collect(two, 2))

    seen_one, seen_two = asyncio.run(talk())
    assert seen_one == seen_two  # identical delta streams on both servers
    created = [f["message"]["content"] for f in seen_one if f["type"] == "message.created"]
    assert sorted(created) == ["from one", "from two"]
    completed = [f["message"]["content"] for f in seen_one if f["type"] == "message.completed"]
    assert completed == [f"echo: {created[0]} [context=1]", f"echo: {created[1]} [context=3]"]
    for frames in (seen_one, seen_two):
        runs = [f["run_id"] for f in frames if f["type"] == "run.started"]
        assert len(set(runs)) == 2
        for run_id, reply in zip(runs, completed, strict=True):
            assert "".join(f["delta"] for f in frames if f.get("run_id") == run_id and f["type"] == "message.delta") \
                == reply


def test_a_session_change_made_on_one_server_is_pushed_by_the_other(servers):
    first, second, webs = servers
    assistant_id = start_session_from_page(webs[0], "changing")

    async def watch():
        path = f"/ws/assistants/{assistant_id}/sessions/changing/"
        async with websockets.connect(f"ws://127.0.0.1:{second.port}{path}",
                                      additional_headers=second.websocket_headers(webs[1])) as socket:
            assert json.loads(await socket.recv())["type"] == "session.ready"
            await asyncio.to_thread(first.manage, "shell", "-c", (
                "from betaassi_django.models import Assistant; "
                f"Assistant.objects.get(id='{assistant_id}').update_session('changing', kind='oneshot')"))
            return json.loads(await asyncio.wait_for(socket.recv(), 20))

    pushed = asyncio.run(watch())
    assert pushed["type"] == "session.updated" and pushed["session"]["kind"] == "oneshot"
