"""A daphne SIGKILLed mid-run: another daphne on the same database ends its run and takes the next turn, within
30 s with the default timings (over HTTP with the openai SDK) and over a WebSocket session that reconnects."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import websockets
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url, http_client, start_session_from_page, wait_for_run

ABANDONED = {"code": "server_error",
             "message": "The server process executing this run stopped before the run finished."}
#: The issue's bound: a thread takes its next turn within 30 s of its server's death.
RECOVERY_BOUND = 30
#: Half a second between echo deltas: a run is mid-stream for seconds.
SLOW_ECHO = {"BETAASSI_ECHO_DELAY": "0.5"}


def _wait_until_ended(api, thread_id: str, run_id: str, timeout: float):
    return wait_for_run(api, thread_id, run_id, timeout, interval=0.25)


def test_a_killed_servers_run_fails_and_the_thread_takes_the_next_run_within_30_s():
    """Default timings (heartbeat 5 s, stale after 15 s): the survivor's periodic sweep ends the run."""
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env=SLOW_ECHO, cwd=settings.BASE_DIR) as doomed,
        LiveServer(url, env=SLOW_ECHO, cwd=settings.BASE_DIR) as survivor,
    ):
        api, other = http_client(doomed), http_client(survivor)
        assistant = api.beta.assistants.create(model="echo-1")
        thread = api.beta.threads.create(messages=[{"role": "user", "content": "one two three four five six"}])
        with api.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
            for event in stream:
                if event.event == "thread.message.delta":
                    break
            run_id = stream.current_run.id
            doomed.kill()
            killed = time.monotonic()
        assert other.beta.threads.runs.retrieve(run_id, thread_id=thread.id).status == "in_progress"

        run = _wait_until_ended(other, thread.id, run_id, RECOVERY_BOUND)
        elapsed = time.monotonic() - killed
        print(f"run ended {elapsed:.1f}s after its server was killed")
        assert elapsed < RECOVERY_BOUND
        assert (run.status, run.last_error.model_dump()) == ("failed", ABANDONED)
        reply = other.beta.threads.messages.list(thread.id, run_id=run_id).data
        assert [(m.status, m.incomplete_details.reason, m.content) for m in reply] == [("incomplete", "run_failed", [])]

        after = other.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                        additional_messages=[{"role": "user", "content": "again"}],
                                                        poll_interval_ms=100)
        assert after.status == "completed"
        text = other.beta.threads.messages.list(thread.id, run_id=after.id).data[0].content[0].text.value
        assert text == "echo: again [context=3]"  # the first message, the dead run's empty reply, this one


async def _frames_until(socket, kind: str, timeout: float) -> list[dict]:
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not frames or frames[-1]["type"] != kind:
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic())))
    return frames


def test_a_websocket_session_whose_server_died_takes_its_next_turn_on_another_server():
    """Short timings (heartbeat 0.5 s, stale after 2 s) keep this one quick; the bound is the issue's."""
    env = {**SLOW_ECHO, "BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_RUN_HEARTBEAT_SECONDS": "0.5",
           "BETAASSI_RUN_STALE_SECONDS": "2"}
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as doomed,
        LiveServer(url, env=env, cwd=settings.BASE_DIR) as survivor,
    ):
        login = doomed.demo_login()
        webs = [server.login(*login) for server in (doomed, survivor)]
        assistant_id, session_id = start_session_from_page(webs[0])
        path = f"/ws/assistants/{assistant_id}/sessions/{session_id}/"

        async def talk() -> tuple[list[dict], list[dict], float]:
            async with websockets.connect(f"ws://127.0.0.1:{doomed.port}{path}",
                                          additional_headers=doomed.websocket_headers(webs[0])) as socket:
                assert json.loads(await socket.recv())["type"] == "session.ready"
                await socket.send(json.dumps({"type": "user.message", "content": "one two three four five"}))
                before = await _frames_until(socket, "message.delta", 20)
                await asyncio.to_thread(doomed.kill)
                killed = time.monotonic()
            # The client reconnects, to the other server, and sends its next turn at once.
            async with websockets.connect(f"ws://127.0.0.1:{survivor.port}{path}",
                                          additional_headers=survivor.websocket_headers(webs[1])) as socket:
                ready = json.loads(await socket.recv())
                assert ready["type"] == "session.ready"
                await socket.send(json.dumps({"type": "user.message", "content": "second"}))
                after = await _frames_until(socket, "message.completed", RECOVERY_BOUND)
            return [ready, *before], after, time.monotonic() - killed

        before, after, elapsed = asyncio.run(talk())
        print(f"next turn completed {elapsed:.1f}s after the server was killed")
        assert elapsed < RECOVERY_BOUND
        assert [f["type"] for f in before[1:]] == ["message.created", "run.started", "message.delta"]
        # The reconnected client sees the turn its dead server left: the message, and an empty reply.
        dead_run = before[2]["run_id"]
        history = [(m["role"], m["content"], m["run_id"]) for m in before[0]["history"]]
        assert history == [("user", "one two three four five", None), ("assistant", "", dead_run)]
        assert [f["type"] for f in after if f["type"] != "message.delta"] == [
            "message.created", "run.started", "message.completed"]
        assert after[0]["message"]["content"] == "second"
        assert after[-1]["message"]["content"] == "echo: second [context=3]"
        assert after[-1]["run_id"] != dead_run


#: A run as a process killed mid-run leaves it, made on the processor's database; prints its id.
ORPHAN = """
from datetime import timedelta
from django.db.models.functions import Now
from betaassi_django.assistants_api.models import Run, Thread
run = Run.objects.create(thread=Thread.objects.create(), assistant_id="asst_gone", model="echo-1",
                         status="in_progress")
Run.objects.filter(pk=run.pk).update(heartbeat_at=Now() - timedelta(seconds=60))
print(run.id)
"""


def test_the_publish_queue_processor_ends_abandoned_runs_too():
    env = {"BETAASSI_RUN_HEARTBEAT_SECONDS": "0.5", "BETAASSI_RUN_STALE_SECONDS": "2"}
    with scratch_database_url(_database_url()) as url:
        operator = LiveServer(url, env=env, cwd=settings.BASE_DIR)  # not served: its manage.py and environment
        operator.manage("migrate", "--noinput", "-v", "0")
        run_id = operator.manage("shell", "-v", "0", "-c", ORPHAN).strip()
        status = f"from betaassi_django.assistants_api.models import Run; print(Run.objects.get(id='{run_id}').status)"
        assert operator.manage("shell", "-v", "0", "-c", status).strip() == "in_progress"
        processor = subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", "--interval", "0.5"],
                                     cwd=settings.BASE_DIR, env=operator.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + RECOVERY_BOUND
            while (seen := operator.manage("shell", "-v", "0", "-c", status).strip()) == "in_progress":
                assert time.monotonic() < deadline, "the processor did not end the abandoned run"
        finally:
            processor.terminate()
            processor.wait(10)
        assert seen == "failed"
