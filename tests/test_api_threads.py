"""Threads and messages endpoints."""

from __future__ import annotations

import openai
import pytest


def _texts(page) -> list[str]:
    return [m.content[0].text.value for m in page.data]


def test_thread_lifecycle_with_initial_messages(client):
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "first", "metadata": {"n": "1"}},
            {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
        ],
        metadata={"topic": "tests"},
    )
    assert thread.id.startswith("thread_") and len(thread.id) == len("thread_") + 24
    assert (thread.object, thread.metadata, thread.tool_resources) == ("thread", {"topic": "tests"}, None)

    messages = client.beta.threads.messages.list(thread.id, order="asc")
    assert _texts(messages) == ["first", "second"]
    first = messages.data[0]
    assert (first.role, first.status, first.thread_id, first.metadata) == ("user", "completed", thread.id, {"n": "1"})
    assert (first.run_id, first.assistant_id, first.attachments) == (None, None, [])
    assert first.content[0].text.annotations == []

    assert client.beta.threads.retrieve(thread.id).model_dump() == thread.model_dump()
    assert client.beta.threads.update(thread.id, metadata={"topic": "changed"}).metadata == {"topic": "changed"}

    deleted = client.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (thread.id, "thread.deleted", True)
    for call in (
        lambda: client.beta.threads.retrieve(thread.id),
        lambda: client.beta.threads.messages.retrieve(first.id, thread_id=thread.id),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.body["message"] == f"No thread found with id '{thread.id}'."


def test_message_lifecycle(client):
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="hello", metadata={"a": "b"})
    assert message.id.startswith("msg_") and len(message.id) == len("msg_") + 24
    assert (message.object, message.role, message.thread_id) == ("thread.message", "user", thread.id)
    assert message.content[0].text.value == "hello"

    fetched = client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert fetched.model_dump() == message.model_dump()

    changed = client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"a": "c"})
    assert changed.metadata == {"a": "c"} and changed.content[0].text.value == "hello"

    deleted = client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (message.id, "thread.message.deleted", True)
    assert client.beta.threads.messages.list(thread.id).data == []
    with pytest.raises(openai.NotFoundError) as info:
        client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert info.value.body["message"] == f"No message found with id '{message.id}'."


def test_message_of_another_thread_is_not_found(client):
    one, other = client.beta.threads.create(), client.beta.threads.create()
    message = client.beta.threads.messages.create(one.id, role="user", content="x")
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=other.id)


def test_message_pagination_edges(client):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(101)])
    everything = client.beta.threads.messages.list(thread.id, limit=100, order="asc")
    assert _texts(everything) == [f"m{i}" for i in range(100)] and everything.has_more is True
    rest = client.beta.threads.messages.list(thread.id, limit=100, order="asc", after=everything.last_id)
    assert _texts(rest) == ["m100"] and rest.has_more is False

    one = client.beta.threads.messages.list(thread.id, limit=1)
    assert _texts(one) == ["m100"] and one.has_more is True
    assert one.first_id == one.last_id == one.data[0].id

    ids = [m.id for m in everything.data] + [rest.data[0].id]
    page = client.beta.threads.messages.list(thread.id, limit=3, order="desc", after=ids[50])
    assert _texts(page) == ["m49", "m48", "m47"] and page.has_more is True
    page = client.beta.threads.messages.list(thread.id, limit=3, order="desc", before=ids[50])
    assert _texts(page) == ["m53", "m52", "m51"] and page.has_more is True
    page = client.beta.threads.messages.list(thread.id, limit=3, order="asc", before=ids[2])
    assert _texts(page) == ["m0", "m1"] and page.has_more is False
    page = client.beta.threads.messages.list(thread.id, limit=5, order="asc", after=ids[10], before=ids[13])
    assert _texts(page) == ["m11", "m12"] and page.has_more is False

    # The SDK's auto-pagination walks every page through the cursors.
    walked = [m.content[0].text.value for m in client.beta.threads.messages.list(thread.id, limit=7, order="asc")]
    assert walked == [f"m{i}" for i in range(101)]


def test_empty_list(client):
    thread = client.beta.threads.create()
    page = client.beta.threads.messages.list(thread.id)
    assert (page.data, page.has_more) == ([], False)


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "system", "content": "x"}, "messages[0].role"),
        ({"role": "user"}, "messages[0].content"),
        ({"role": "user", "content": 7}, "messages[0].content"),
        ({"role": "user", "content": "x", "metadata": {"k": 1}}, "messages[0].metadata.k"),
    ],
)
def test_bad_initial_messages_create_nothing(client, message, param):
    before = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.create(messages=[message])
    assert info.value.param == param
    after = client.beta.threads.create()
    assert after.id != before.id


def test_unknown_ids_are_404(client):
    thread = client.beta.threads.create()
    calls = [
        lambda: client.beta.threads.retrieve("thread_missing"),
        lambda: client.beta.threads.update("thread_missing", metadata={}),
        lambda: client.beta.threads.delete("thread_missing"),
        lambda: client.beta.threads.messages.list("thread_missing"),
        lambda: client.beta.threads.messages.create("thread_missing", role="user", content="x"),
        lambda: client.beta.threads.messages.retrieve("msg_missing", thread_id=thread.id),
        lambda: client.beta.threads.messages.update("msg_missing", thread_id=thread.id, metadata={}),
        lambda: client.beta.threads.messages.delete("msg_missing", thread_id=thread.id),
        lambda: client.beta.assistants.retrieve("asst_missing"),
        lambda: client.beta.assistants.update("asst_missing", name="x"),
        lambda: client.beta.assistants.delete("asst_missing"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.body["type"] == "invalid_request_error"
        assert info.value.body["message"].startswith("No ")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", ["in_process"], indirect=True)  # the statements of this process
def test_thread_delete_is_four_statements_and_deletes_exactly_its_own(client):
    """A thread's delete removes its messages, runs and their steps, and nothing of another thread's, with one
    DELETE per table (the cascade collector's SELECTs and per-model work not needed)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from betaassi_django.assistants_api.models import Message, Run, RunStep, Thread

    def filled() -> Thread:
        thread = Thread.objects.create()
        Message.objects.create(thread=thread, role="user", content=[])
        Message.objects.create(thread=thread, role="user", content=[])
        for _ in range(2):
            run = Run.objects.create(thread=thread, assistant_id="asst_x", model="m", status="completed")
            RunStep.objects.create(run=run, thread_id=thread.id, assistant_id="asst_x", type="message_creation")
        return thread

    doomed, kept = filled(), filled()
    with CaptureQueriesContext(connection) as queries:
        deleted = client.beta.threads.delete(doomed.id)
    assert (deleted.id, deleted.deleted) == (doomed.id, True)
    verbs = [q["sql"].split()[0] for q in queries.captured_queries]
    assert [verb for verb in verbs if verb not in ("BEGIN", "COMMIT")] == ["DELETE"] * 4  # no SELECT first
    assert not Thread.objects.filter(id=doomed.id).exists()
    assert (Message.objects.count(), Run.objects.count(), RunStep.objects.count()) == (2, 2, 2)
    assert (Message.objects.filter(thread=kept).count(), RunStep.objects.filter(run__thread=kept).count()) == (2, 2)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.delete(doomed.id)
