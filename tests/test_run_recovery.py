"""Runs never stay stuck: abandoned runs are ended by a sweep or by the next run, failures inside execution end
the run failed, a live run is never taken for abandoned, and an execution ended elsewhere stops writing.

A run "whose process died" is a row left executing with an old heartbeat and no engine behind it; every
other step goes through the product's own engine, store and API (the SDK, in-process).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from django.db.models.functions import Now

from betaassi_django.assistants_api import recovery
from betaassi_django.assistants_api.engine import engine
from betaassi_django.assistants_api.execution import execute_run
from betaassi_django.assistants_api.models import Message, Run, RunStep, Thread
from tests.conftest import in_process_client, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)

ABANDONED = {"code": "server_error",
             "message": "The server process executing this run stopped before the run finished."}
FAILED = {"code": "server_error", "message": "The run stopped on an internal server error."}


@pytest.fixture
def client():
    return in_process_client()


def _setup(client, text: str = "hello"):
    assistant = client.beta.assistants.create(model="echo-1")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    return assistant, thread


def _orphan(thread_id: str, assistant_id: str, status: str = "in_progress", age: float = 60, **fields) -> Run:
    """A run as a killed process leaves it mid-reply: its message and step open, its heartbeat ``age`` s old."""
    thread = Thread.objects.get(id=thread_id)
    fields = {"truncation_strategy": {"type": "auto", "last_messages": None}, **fields}
    run = Run.objects.create(thread=thread, assistant_id=assistant_id, model="echo-1", status=status, **fields)
    message = Message.objects.create(thread=thread, role="assistant", status="in_progress", content=[],
                                     assistant_id=assistant_id, run_id=run.id)
    RunStep.objects.create(run=run, thread_id=thread_id, assistant_id=assistant_id, type="message_creation",
                           step_details={"type": "message_creation",
                                         "message_creation": {"message_id": message.id}})
    Run.objects.filter(pk=run.pk).update(heartbeat_at=Now() - timedelta(seconds=age))
    return run


def _assert_failed_with(client, thread_id: str, run_id: str, error: dict) -> None:
    run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    assert (run.status, run.last_error.model_dump()) == ("failed", error)
    assert run.failed_at is not None and run.completed_at is None
    reply = client.beta.threads.messages.list(thread_id, run_id=run_id).data
    assert [(m.status, m.incomplete_details.reason) for m in reply] == [("incomplete", "run_failed")]
    steps = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id).data
    assert [(s.status, s.last_error.model_dump()) for s in steps] == [("failed", error)]


def test_the_sweep_ends_an_abandoned_run_once_and_spares_a_fresh_one(client):
    assistant, thread = _setup(client)
    orphan = _orphan(thread.id, assistant.id)
    _, other = _setup(client)
    fresh = _orphan(other.id, assistant.id, age=0)

    assert recovery.sweep() == [orphan.id]
    assert recovery.sweep() == []  # a second reaper finds nothing: the end is conditional
    _assert_failed_with(client, thread.id, orphan.id, ABANDONED)
    assert Run.objects.get(id=fresh.id).status == "in_progress"

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10)
    assert run.status == "completed"


@pytest.mark.parametrize("status, ended", [("queued", "failed"), ("cancelling", "cancelled")])
def test_queued_and_cancelling_runs_are_abandoned_too(client, status, ended):
    assistant, thread = _setup(client)
    orphan = _orphan(thread.id, assistant.id, status=status)
    assert recovery.sweep() == [orphan.id]
    run = client.beta.threads.runs.retrieve(orphan.id, thread_id=thread.id)
    error = run.last_error and run.last_error.model_dump()
    assert (run.status, error) == (ended, ABANDONED if ended == "failed" else None)
    reply = client.beta.threads.messages.list(thread.id, run_id=orphan.id).data[0]
    assert (reply.status, reply.incomplete_details.reason) == ("incomplete", f"run_{ended}")


def test_a_new_run_or_message_ends_the_abandoned_run_at_once(client):
    assistant, thread = _setup(client)
    orphan = _orphan(thread.id, assistant.id)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10)
    assert run.status == "completed"
    _assert_failed_with(client, thread.id, orphan.id, ABANDONED)

    second = _orphan(thread.id, assistant.id)
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")
    assert Run.objects.get(id=second.id).status == "failed"


def test_a_waiting_run_is_not_abandoned_but_expires(client):
    assistant, thread = _setup(client)
    waiting = _orphan(thread.id, assistant.id, status="requires_action", expires_at=int(time.time()) + 600)
    RunStep.objects.filter(run=waiting).update(type="tool_calls")
    assert recovery.sweep() == []  # no heartbeat needed: it waits for the client
    Run.objects.filter(pk=waiting.pk).update(expires_at=int(time.time()) - 1)
    assert recovery.sweep() == [waiting.id]
    assert client.beta.threads.runs.retrieve(waiting.id, thread_id=thread.id).status == "expired"
    step = client.beta.threads.runs.steps.list(waiting.id, thread_id=thread.id).data[0]
    assert step.status == "expired" and step.expired_at is not None


def test_a_live_run_that_outlasts_the_staleness_is_never_reaped(client, settings):
    """Another process sweeps all along (every 50 ms) while a run streams for three times the staleness."""
    settings.BETAASSI_RUN_HEARTBEAT_SECONDS, settings.BETAASSI_RUN_STALE_SECONDS = 0.2, 0.6
    settings.BETAASSI_ECHO_DELAY = 0.1
    assistant, thread = _setup(client, " ".join(f"w{i}" for i in range(18)))
    reaped, stop = [], threading.Event()

    def other_process() -> None:
        from django.db import connection

        while not stop.wait(0.05):
            reaped.extend(recovery.sweep())
        connection.close()

    sweeper = threading.Thread(target=other_process)
    sweeper.start()
    try:
        started = time.monotonic()
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       poll_interval_ms=50)
        assert time.monotonic() - started > 3 * 0.6
    finally:
        stop.set()
        sweeper.join()
    assert (run.status, run.last_error, reaped) == ("completed", None, [])


def test_an_execution_ended_elsewhere_stops_writing(client, settings):
    """Its stream gets the run's end event, and the reaper's end state stays."""
    settings.BETAASSI_ECHO_DELAY = 0.05
    assistant, thread = _setup(client, " ".join(f"w{i}" for i in range(60)))
    names = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            names.append(event.event)
            if names.count("thread.message.delta") == 2:
                # As if this process had hung for longer than the staleness: another process reaps the run.
                run_id = stream.current_run.id
                Run.objects.filter(id=run_id).update(heartbeat_at=Now() - timedelta(seconds=60))
                assert recovery.end_run(run_id, recovery.ABANDONED, only_if_stale=True) is not None
    assert names[-1] == "thread.run.failed"
    assert "thread.run.completed" not in names and "thread.message.completed" not in names
    time.sleep(0.3)  # the engine had its chance to write, and did not
    _assert_failed_with(client, thread.id, run_id, ABANDONED)
    assert client.beta.threads.messages.list(thread.id, run_id=run_id).data[0].content == []


def test_an_exception_inside_execution_fails_the_run(client):
    """A stored run the engine cannot execute (a count no database can take) ends failed, with its stream."""
    assistant, thread = _setup(client)
    run = Run.objects.create(thread=Thread.objects.get(id=thread.id), assistant_id=assistant.id, model="echo-1",
                             truncation_strategy={"type": "last_messages", "last_messages": 2**70})
    events = engine.subscribe(run.id)
    engine.submit(run.id, execute_run).result(30)

    async def drain() -> list:
        items = []
        while (item := await events.get()) is not None:
            items.append(item)
        return items

    items = asyncio.run(drain())
    assert [name for name, _ in items] == ["thread.run.failed"]
    assert (items[0][1]["status"], items[0][1]["last_error"]) == ("failed", FAILED)
    retrieved = wait_for_run(client, thread.id, run.id)
    assert (retrieved.status, retrieved.last_error.model_dump()) == ("failed", FAILED)
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")


def test_a_run_handed_its_tool_outputs_after_a_long_wait_is_not_taken_for_abandoned(client):
    """Its heartbeat clock starts again when it is queued again, however long it waited for the client."""
    assistant, thread = _setup(client)
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    waiting = _orphan(thread.id, assistant.id, status="requires_action", age=3600, expires_at=int(time.time()) + 600,
                      required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}})
    RunStep.objects.filter(run=waiting).update(
        type="tool_calls", step_details={"type": "tool_calls", "tool_calls": [
            {**call, "function": {**call["function"], "output": None}}]})
    Message.objects.filter(run_id=waiting.id).update(status="completed")
    client.beta.threads.runs.submit_tool_outputs(waiting.id, thread_id=thread.id,
                                                 tool_outputs=[{"tool_call_id": "call_1", "output": "42"}])
    assert recovery.sweep() == []
    assert wait_for_run(client, thread.id, waiting.id).status == "completed"


@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
def test_an_upstream_answering_garbage_fails_the_run_and_its_stream(client, settings, upstream_api):
    from tests.fake_upstream import FakeUpstream, Garbage

    with FakeUpstream() as fake:
        settings.BETAASSI_RESPONDER, settings.BETAASSI_UPSTREAM_API = "openai", upstream_api
        settings.BETAASSI_UPSTREAM_BASE_URL, settings.BETAASSI_UPSTREAM_MAX_RETRIES = fake.base_url, 0
        fake.script(Garbage())
        assistant, thread = _setup(client)
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
            names = [event.event for event in stream]
            run = stream.current_run
    assert names[-1] == "thread.run.failed" and names[:3] == ["thread.run.created", "thread.run.queued",
                                                               "thread.run.in_progress"]
    error = {"code": "server_error", "message": "The responder failed on an unexpected error (JSONDecodeError)."}
    assert (run.status, run.last_error.model_dump()) == ("failed", error)
    _assert_failed_with(client, thread.id, run.id, error)
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")
