"""A new run starts as its creation commits and writes its reply message and step then (``run_start.start``), so
its first delta needs no database work: what a client streams and what is stored stay as when the reply was written
at the first delta (``run_start.open_message``, still the path of a run queued again after tool outputs)."""

from __future__ import annotations

import pytest

from tests.conftest import in_process_client
from tests.fake_upstream import Calls, FakeUpstream, Text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(settings):
    with FakeUpstream() as fake:
        settings.BETAASSI_RESPONDER = "openai"
        settings.BETAASSI_UPSTREAM_API = "chat"
        settings.BETAASSI_UPSTREAM_BASE_URL = fake.base_url
        settings.BETAASSI_UPSTREAM_API_KEY = "sk-upstream-test"
        yield in_process_client(), fake
    assert fake.violations == []


def _streamed(client, thread_id: str, assistant_id: str) -> list:
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        return list(stream)


def test_the_reply_is_stored_as_its_events_announced_it(client):
    client, fake = client
    fake.script(Text(["Hel", "lo"]))
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    events = _streamed(client, thread.id, assistant.id)
    names = [e.event for e in events]
    assert names == ["thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.step.created",
                     "thread.run.step.in_progress", "thread.message.created", "thread.message.in_progress",
                     "thread.message.delta", "thread.message.delta", "thread.message.completed",
                     "thread.run.step.completed", "thread.run.completed"]
    created = {e.event: e.data for e in events}
    message = client.beta.threads.messages.retrieve(created["thread.message.created"].id, thread_id=thread.id)
    step = client.beta.threads.runs.steps.retrieve(created["thread.run.step.created"].id, thread_id=thread.id,
                                                   run_id=created["thread.run.created"].id)
    assert message.created_at == created["thread.message.created"].created_at
    assert step.created_at == created["thread.run.step.created"].created_at
    assert message.model_dump() == created["thread.message.completed"].model_dump()
    assert step.model_dump() == created["thread.run.step.completed"].model_dump()
    assert [m.role for m in client.beta.threads.messages.list(thread.id, order="asc").data] == ["user", "assistant"]


def test_a_run_that_stops_for_its_calls_without_text_keeps_no_reply(client):
    client, fake = client
    fake.script(Calls([("get_weather", '{"city": "Paris"}')]))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model="m", tools=[tool])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    events = _streamed(client, thread.id, assistant.id)
    assert [e.event for e in events][-4:] == ["thread.run.step.created", "thread.run.step.in_progress",
                                              "thread.run.step.delta", "thread.run.requires_action"]
    assert not [e for e in events if e.event.startswith("thread.message.")]
    run = events[-1].data
    assert [m.role for m in client.beta.threads.messages.list(thread.id).data] == ["user"]
    assert [s.type for s in client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data] == ["tool_calls"]


def test_a_run_whose_metadata_changes_while_it_streams_ends_as_stored(client):
    """The end's one-statement UPDATE holds only while the run is as its start read it: metadata modified meanwhile
    makes the end read the run under a lock, and its end event carries the new metadata."""
    client, fake = client
    fake.script(Text(["Hel", "lo"], delay=0.2))
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = []
        for event in stream:
            events.append(event)
            if event.event == "thread.message.delta" and len([e for e in events if e.event == event.event]) == 1:
                client.beta.threads.runs.update(stream.current_run.id, thread_id=thread.id,
                                                metadata={"topic": "weather"})
    ended = events[-1]
    assert (ended.event, ended.data.metadata) == ("thread.run.completed", {"topic": "weather"})
    stored = client.beta.threads.runs.retrieve(ended.data.id, thread_id=thread.id)
    assert stored.model_dump() == ended.data.model_dump()
    assert stored.usage.total_tokens == 18
