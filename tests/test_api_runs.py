"""Runs and run steps: lifecycle, streaming, cancel, the active-run rule, truncation."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import cancel_after_deltas, wait_for_run

LONG_TEXT = " ".join(f"word{i}" for i in range(400))  # 400+ deltas: a run that lasts seconds


def _setup(client, *texts: str):
    assistant = client.beta.assistants.create(model="echo-1", instructions="Repeat.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": t} for t in texts])
    return assistant, thread


def test_run_lifecycle(client):
    assistant, thread = _setup(client, "hello there")
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, metadata={"job": "1"})
    assert run.id.startswith("run_") and len(run.id) == len("run_") + 24
    assert (run.status, run.thread_id, run.assistant_id, run.model) == ("queued", thread.id, assistant.id, "echo-1")
    assert (run.instructions, run.metadata, run.tools) == ("Repeat.", {"job": "1"}, [])
    assert run.expires_at == run.created_at + 600
    assert run.truncation_strategy.type == "auto"

    done = wait_for_run(client, thread.id, run.id)
    assert done.status == "completed" and done.started_at is not None and done.completed_at is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (3, 4, 7)

    reply = client.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [m.content[0].text.value for m in reply.data] == ["echo: hello there [context=1]"]
    message = reply.data[0]
    assert (message.role, message.status, message.assistant_id, message.run_id) == (
        "assistant",
        "completed",
        assistant.id,
        run.id,
    )

    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert len(steps.data) == 1
    step = steps.data[0]
    assert step.id.startswith("step_") and len(step.id) == len("step_") + 24
    assert (step.type, step.status, step.run_id, step.thread_id) == ("message_creation", "completed", run.id, thread.id)
    assert step.step_details.message_creation.message_id == message.id
    assert step.usage.total_tokens == 7
    fetched = client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id)
    assert fetched.model_dump() == step.model_dump()

    assert client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"job": "2"}).metadata == {"job": "2"}
    runs = client.beta.threads.runs.list(thread.id)
    assert [r.id for r in runs.data] == [run.id] and runs.data[0].metadata == {"job": "2"}


def test_run_overrides(client):
    assistant, thread = _setup(client, "hi")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        model="other-model",
        instructions="Other.",
        additional_messages=[{"role": "user", "content": "added"}],
        temperature=0.2,
        poll_interval_ms=10,
    )
    assert (run.status, run.model, run.instructions, run.temperature) == ("completed", "other-model", "Other.", 0.2)
    latest = client.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert latest.content[0].text.value == "echo: added [context=2]"


@pytest.mark.parametrize(
    ("strategy", "context"),
    [
        (None, 3),
        ({"type": "auto"}, 3),
        ({"type": "last_messages", "last_messages": 1}, 1),
        ({"type": "last_messages", "last_messages": 2}, 2),
        ({"type": "last_messages", "last_messages": 50}, 3),
    ],
)
def test_truncation_strategy(client, strategy, context):
    assistant, thread = _setup(client, "one", "two", "three")
    extra = {"truncation_strategy": strategy} if strategy else {}
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10, **extra
    )
    assert run.status == "completed"
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert reply.content[0].text.value == f"echo: three [context={context}]"


def test_last_messages_needs_a_count(client):
    assistant, thread = _setup(client, "x")
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, truncation_strategy={"type": "last_messages"}
        )
    assert info.value.param == "truncation_strategy.last_messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, truncation_strategy={"type": "last_messages", "last_messages": 0}
        )
    assert info.value.param == "truncation_strategy.last_messages"


EXPECTED_PREFIX = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
]
EXPECTED_SUFFIX = ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]


def test_stream_event_sequence(client):
    assistant, thread = _setup(client, "stream me please")
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = [(event.event, event.data) for event in stream]
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    names = [name for name, _ in events]
    deltas = [data.delta.content[0].text.value for name, data in events if name == "thread.message.delta"]
    assert names == EXPECTED_PREFIX + ["thread.message.delta"] * len(deltas) + EXPECTED_SUFFIX
    assert deltas == ["echo: ", "stream ", "me ", "please ", "[context=1]"]
    assert "".join(deltas) == messages[0].content[0].text.value == "echo: stream me please [context=1]"
    assert final.status == "completed"
    assert client.beta.threads.runs.retrieve(final.id, thread_id=thread.id).status == "completed"


def test_create_and_run(client):
    assistant = client.beta.assistants.create(model="m")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "new thread"}], "metadata": {"via": "create_and_run"}},
        poll_interval_ms=10,
    )
    assert run.status == "completed"
    assert client.beta.threads.retrieve(run.thread_id).metadata == {"via": "create_and_run"}
    reply = client.beta.threads.messages.list(run.thread_id, limit=1).data[0]
    assert reply.content[0].text.value == "echo: new thread [context=1]"


def test_create_and_run_stream_starts_with_the_thread(client):
    assistant = client.beta.assistants.create(model="m")
    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hey"}]}
    ) as stream:
        names = [event.event for event in stream]
        text = stream.get_final_messages()[0].content[0].text.value
    assert names[0] == "thread.created" and names[1:8] == EXPECTED_PREFIX
    assert names[-3:] == EXPECTED_SUFFIX and text == "echo: hey [context=1]"


def test_active_run_conflict_and_cancel(client):
    assistant, thread = _setup(client, LONG_TEXT)
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert info.value.body["message"] == f"Thread {thread.id} already has an active run {run.id}."
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    assert info.value.body["message"] == f"Can't add messages to {thread.id} while a run {run.id} is active."

    while client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued":
        time.sleep(0.01)  # cancel it mid-reply, not before it starts
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    cancelled = wait_for_run(client, thread.id, run.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None and cancelled.completed_at is None

    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.status, reply.incomplete_details.reason) == ("incomplete", "run_cancelled")
    partial = reply.content[0].text.value if reply.content else ""  # empty when cancelled before the first delta
    assert len(partial) < len(f"echo: {LONG_TEXT} [context=1]")
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    assert step.status == "cancelled"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert info.value.body["message"] == "Cannot cancel run with status 'cancelled'."

    # The thread is free again.
    client.beta.threads.messages.create(thread.id, role="user", content="after")
    again = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    assert again.status == "completed"


def test_cancel_while_streaming(client):
    assistant, thread = _setup(client, LONG_TEXT)
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        names = cancel_after_deltas(client, stream, thread.id, 3)
    assert names[-3:] == ["thread.message.incomplete", "thread.run.step.cancelled", "thread.run.cancelled"]
    assert names.count("thread.message.delta") < 100


def test_unknown_ids_in_runs_are_404(client):
    assistant, thread = _setup(client, "x")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10)
    calls = {
        "run": lambda: client.beta.threads.runs.retrieve("run_missing", thread_id=thread.id),
        "run ": lambda: client.beta.threads.runs.update("run_missing", thread_id=thread.id, metadata={}),
        " run": lambda: client.beta.threads.runs.cancel("run_missing", thread_id=thread.id),
        "run  ": lambda: client.beta.threads.runs.steps.list("run_missing", thread_id=thread.id),
        "run step": lambda: client.beta.threads.runs.steps.retrieve("step_missing", thread_id=thread.id, run_id=run.id),
        "thread": lambda: client.beta.threads.runs.list("thread_missing"),
        "thread ": lambda: client.beta.threads.runs.create("thread_missing", assistant_id=assistant.id),
        "assistant": lambda: client.beta.threads.runs.create(thread.id, assistant_id="asst_missing"),
        "assistant ": lambda: client.beta.threads.create_and_run(assistant_id="asst_missing"),
    }
    for kind, call in calls.items():
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.body["message"].startswith(f"No {kind.strip()} found with id"), kind


def test_submit_tool_outputs_needs_requires_action(client):
    assistant, thread = _setup(client, "x")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_1", "output": "x"}]
        )
    assert info.value.body["message"] == 'Runs in status "completed" do not accept tool outputs.'


async def test_async_streaming_text_deltas(aclient):
    assistant = await aclient.beta.assistants.create(model="m")
    thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": "async hello"}])
    async with aclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        deltas = [delta async for delta in stream.text_deltas]
        run = await stream.get_final_run()
    assert deltas == ["echo: ", "async ", "hello ", "[context=1]"]
    assert run.status == "completed"
    page = await aclient.beta.threads.messages.list(thread.id, run_id=run.id)
    assert page.data[0].content[0].text.value == "echo: async hello [context=1]"


@pytest.mark.django_db(transaction=True)
def test_a_run_past_its_expiry_is_expired_and_frees_the_thread(settings):
    """A run whose process died never finishes: once expires_at passes it reads as expired."""
    from betaassi_django.assistants_api.models import Run
    from tests.conftest import in_process_client

    client = in_process_client()
    assistant, thread = _setup(client, LONG_TEXT)
    settings.BETAASSI_ECHO_DELAY = 0.01
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    wait_for_run(client, thread.id, run.id)
    # Simulate a crashed process: the run stays in progress with its time run out.
    Run.objects.filter(id=run.id).update(status="in_progress", expires_at=run.created_at - 1)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "expired"
    client.beta.threads.messages.create(thread.id, role="user", content="free again")


@pytest.mark.django_db(transaction=True)
def test_a_responder_failure_fails_the_run(settings):
    """A run whose responder cannot answer ends failed, with last_error, and frees its thread."""
    from betaassi_django.testing import free_port
    from tests.conftest import in_process_client

    settings.BETAASSI_RESPONDER = "openai"  # an upstream nothing listens on: every run fails
    settings.BETAASSI_UPSTREAM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.BETAASSI_UPSTREAM_MAX_RETRIES = 0
    client = in_process_client()
    assistant, thread = _setup(client, "hello")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=10)
    assert (run.status, run.last_error.code) == ("failed", "server_error")
    assert run.last_error.message == "Could not reach the upstream model: Connection error."
    assert run.failed_at is not None and run.completed_at is None
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    assert (step.status, step.last_error.code) == ("failed", "server_error")
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.status, reply.incomplete_details.reason) == ("incomplete", "run_failed")
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")


@pytest.mark.django_db(transaction=True)
def test_in_process_calls_send_no_request_signals():
    from django.core.signals import request_finished, request_started

    from tests.conftest import in_process_client

    fired = []

    def receiver(**kwargs):
        fired.append(kwargs)

    request_started.connect(receiver)
    request_finished.connect(receiver)
    try:
        client = in_process_client()
        assistant = client.beta.assistants.create(model="m")
        client.beta.assistants.retrieve(assistant.id)
    finally:
        request_started.disconnect(receiver)
        request_finished.disconnect(receiver)
    assert fired == []


async def test_concurrent_streams_each_get_their_own_events(aclient):
    """Ten runs streamed at once: every stream carries exactly its own run's events."""
    import asyncio

    assistant = await aclient.beta.assistants.create(model="m")

    async def one(index: int) -> tuple[str, str, str]:
        thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": f"stream number {index}"}])
        async with aclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
            deltas = "".join([delta async for delta in stream.text_deltas])
            run = await stream.get_final_run()
            final = (await stream.get_final_messages())[0].content[0].text.value
        assert run.thread_id == thread.id and run.status == "completed"
        return deltas, final, f"echo: stream number {index} [context=1]"

    results = await asyncio.gather(*(one(index) for index in range(10)))
    for deltas, final, expected in results:
        assert deltas == final == expected
