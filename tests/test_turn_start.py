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


def test_a_new_run_starts_as_created_and_its_events_match_the_store(client):
    """The start does not read the run it was created with: its in_progress event is the run as stored then (the
    integers given for float fields come back as floats, as a read gives them)."""
    client, fake = client
    fake.script(Text(["Hel", "lo"], delay=0.2))
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, temperature=1, top_p=1,
                                         metadata={"topic": "tea"}) as stream:
        for event in stream:
            if event.event == "thread.run.in_progress":
                started = event.data
                stored = client.beta.threads.runs.retrieve(started.id, thread_id=thread.id)
    assert stored.model_dump() == started.model_dump()
    assert (started.status, started.temperature, started.top_p, started.metadata) == ("in_progress", 1.0, 1.0,
                                                                                      {"topic": "tea"})
    assert started.started_at is not None


def test_a_run_modified_between_its_creation_and_its_start_starts_as_stored(client, monkeypatch):
    """The start's UPDATE holds only while the run has the metadata it was created with: metadata modified in
    between makes the start read it (``start_locked``), so its events carry the new metadata."""
    from betaassi_django.assistants_api import execution
    from betaassi_django.assistants_api.models import Run

    original = execution.start

    def modified_first(run_id, created=None):
        Run.objects.filter(id=run_id).update(metadata={"topic": "weather"})
        return original(run_id, created)

    monkeypatch.setattr(execution, "start", modified_first)
    client, fake = client
    fake.script(Text(["Hel", "lo"]))
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    events = {e.event: e.data for e in _streamed(client, thread.id, assistant.id)}
    assert events["thread.run.created"].metadata == {}
    assert events["thread.run.in_progress"].metadata == {"topic": "weather"}
    assert events["thread.run.completed"].metadata == {"topic": "weather"}
    stored = client.beta.threads.runs.retrieve(events["thread.run.completed"].id, thread_id=thread.id)
    assert stored.model_dump() == events["thread.run.completed"].model_dump()
