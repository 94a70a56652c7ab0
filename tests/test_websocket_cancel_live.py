"""Stopping a reply across processes: two daphne processes sharing one database and channels-redis.

The turn runs in the first process; the user presses stop in a tab connected to the second. The second finds
the run from the session's thread, the first process's engine notices the cancel (it polls the run's status)
and both tabs get the same ``run.failed``; the partial reply stays in the thread.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url, start_session_from_page

REDIS_URL = "redis://127.0.0.1:6379/6"
LONG = "m0" + " word" * 60


@pytest.fixture(scope="module")
def servers():
    env = {"REDIS_URL": REDIS_URL, "BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.05"}
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as first,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as second,
    ):
        login = first.demo_login()
        yield first, second, [server.login(*login) for server in (first, second)]


async def _until(socket, *kinds: str) -> list[dict]:
    frames = [json.loads(await asyncio.wait_for(socket.recv(), 20))]
    while frames[-1]["type"] not in kinds:
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
    return frames


def _reply(frames: list[dict]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "message.delta")


def test_a_stop_pressed_on_another_process_stops_the_reply_everywhere(servers):
    first, second, webs = servers
    assistant_id, session_id = start_session_from_page(webs[0])
    path = f"/ws/assistants/{assistant_id}/sessions/{session_id}/"

    async def talk():
        async with (
            websockets.connect(f"ws://127.0.0.1:{first.port}{path}",
                               additional_headers=first.websocket_headers(webs[0])) as one,
            websockets.connect(f"ws://127.0.0.1:{second.port}{path}",
                               additional_headers=second.websocket_headers(webs[1])) as two,
        ):
            for socket in (one, two):
                assert json.loads(await socket.recv())["type"] == "session.ready"
            await one.send(json.dumps({"type": "user.message", "content": LONG}))
            head = await _until(two, "message.delta")
            await two.send(json.dumps({"type": "run.cancel"}))
            seen_two = head + await _until(two, "message.completed", "run.failed")
            seen_one = await _until(one, "message.completed", "run.failed")
            await two.send(json.dumps({"type": "user.message", "content": "next"}))
            after = await _until(one, "message.completed", "run.failed")
            async with websockets.connect(f"ws://127.0.0.1:{second.port}{path}",
                                          additional_headers=second.websocket_headers(webs[1])) as three:
                history = json.loads(await three.recv())["history"]
            return seen_one, seen_two, after, history

    seen_one, seen_two, after, history = asyncio.run(talk())
    run_id = seen_two[1]["run_id"]
    failed = {"type": "run.failed", "run_id": run_id, "error": "cancelled", "status": "cancelled"}
    assert seen_one[-1] == failed and seen_two[-1] == failed
    assert [f for f in seen_one + seen_two if f["type"] in ("error", "message.completed")] == []
    partial = _reply(seen_two)
    assert _reply(seen_one) == partial and partial.startswith("echo: ")
    full = f"echo: {LONG} [context=1]"
    assert full.startswith(partial) and len(partial) < len(full)
    assert [(m["role"], m["content"], m["run_id"]) for m in history[:2]] == [
        ("user", LONG, None), ("assistant", partial, run_id)]
    assert after[-1]["type"] == "message.completed" and _reply(after) == "echo: next [context=3]"
