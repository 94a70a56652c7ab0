"""Scoped API keys over real HTTP, against every /v1 operation: read-only, limited to assistants, full access.

Keys are made in the live server's own database with ``manage.py create_api_key``, as an operator would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx2
import openai
import pytest
from django.core.management import CommandError, call_command

from betaassi_django.assistants_api.models import ApiKey, Assistant
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY, create_queue
from betaassi_django.registry.root import Root
from tests.conftest import _sdk_client, http_client
from tests.spec import _operations, operation

READ_ONLY = "You have insufficient permissions for this operation: this API key is read-only (GET requests only)."
TAG = "betaassi_assistant"


def outside(kind: str, object_id: str) -> str:
    return (f"You have insufficient permissions for this operation: this API key is limited to some assistants and "
            f"their threads, and {kind} '{object_id}' is not one of them.")


def forbidden(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": "insufficient_permissions"}}


def key_client(server, *options: str) -> openai.OpenAI:
    """A client with a new key made by ``manage.py create_api_key`` on the server's database."""
    raw = server.manage("create_api_key", "scoped", *options).strip().splitlines()[-1]
    return _sdk_client("http", base_url=server.base_url, api_key=raw)


def refused(call, message: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        call()
    assert caught.value.status_code == 403
    assert caught.value.response.json() == forbidden(message)


def operations_called(api: openai.OpenAI) -> set[str]:
    return {operation(method, path)[0] for method, path in api._client._transport.requests}


@dataclass
class Conversation:
    """An assistant with a session thread (tagged as the publisher tags it), a message, a finished run, a step."""

    assistant: str
    thread: str
    message: str
    run: str
    step: str


def conversation(full: openai.OpenAI, name: str, assistant_id: str | None = None) -> Conversation:
    assistant_id = assistant_id or full.beta.assistants.create(model="echo", name=name).id
    thread = full.beta.threads.create(metadata={TAG: assistant_id, "betaassi_session": f"{name}-1"},
                                      messages=[{"role": "user", "content": f"hello {name}"}])
    run = full.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=20)
    assert run.status == "completed"
    [message] = full.beta.threads.messages.list(thread.id, order="asc", limit=1).data
    [step] = full.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    return Conversation(assistant_id, thread.id, message.id, run.id, step.id)


@pytest.fixture(scope="module")
def world(daphne_server):
    full = http_client(daphne_server)
    return {"mine": conversation(full, "mine"), "other": conversation(full, "other")}


def reads(api: openai.OpenAI, c: Conversation) -> dict:
    """Every GET operation on one conversation: what each answers."""
    threads = api.beta.threads
    return {
        "getAssistant": api.beta.assistants.retrieve(c.assistant).id,
        "getThread": threads.retrieve(c.thread).metadata,
        "listMessages": [m.id for m in threads.messages.list(c.thread, order="asc").data],
        "getMessage": threads.messages.retrieve(c.message, thread_id=c.thread).content[0].text.value,
        "listRuns": [r.id for r in threads.runs.list(c.thread).data],
        "getRun": threads.runs.retrieve(c.run, thread_id=c.thread).status,
        "listRunSteps": [s.id for s in threads.runs.steps.list(c.run, thread_id=c.thread).data],
        "getRunStep": threads.runs.steps.retrieve(c.step, thread_id=c.thread, run_id=c.run).type,
    }


def writes(api: openai.OpenAI, c: Conversation) -> list:
    """Every write operation on one conversation (run with a key that may not write: each must be refused)."""
    threads = api.beta.threads
    return [
        lambda: api.beta.assistants.create(model="echo"),
        lambda: api.beta.assistants.update(c.assistant, name="renamed"),
        lambda: api.beta.assistants.delete(c.assistant),
        lambda: threads.create(metadata={TAG: c.assistant}),
        lambda: threads.create_and_run(assistant_id=c.assistant, thread={"metadata": {TAG: c.assistant}}),
        lambda: threads.update(c.thread, metadata={TAG: c.assistant, "x": "1"}),
        lambda: threads.delete(c.thread),
        lambda: threads.messages.create(c.thread, role="user", content="more"),
        lambda: threads.messages.update(c.message, thread_id=c.thread, metadata={"x": "1"}),
        lambda: threads.messages.delete(c.message, thread_id=c.thread),
        lambda: threads.runs.create(c.thread, assistant_id=c.assistant),
        lambda: threads.runs.update(c.run, thread_id=c.thread, metadata={"x": "1"}),
        lambda: threads.runs.cancel(c.run, thread_id=c.thread),
        lambda: threads.runs.submit_tool_outputs(c.run, thread_id=c.thread,
                                                 tool_outputs=[{"tool_call_id": "call_1", "output": "x"}]),
    ]


#: Files and vector stores belong to no assistant: a key limited to assistants reaches none of them (a read-only
#: key reads them). Their own tests check that with scoped keys (tests/test_api_files.py and the vector stores').
UNASSIGNED_TAGS = {"Files", "Vector stores"}


def every_operation() -> set[str]:
    """Every operation on assistants and threads (the ones scopes tie to assistants)."""
    return {op_id for _, _, op_id, op in _operations() if not UNASSIGNED_TAGS & set(op.get("tags", []))}


def test_a_read_only_key_does_every_get_and_is_refused_every_write(daphne_server, world):
    full, ro = http_client(daphne_server), key_client(daphne_server, "--read-only")
    for c in world.values():
        assert reads(ro, c) == reads(full, c)
        for write in writes(ro, c):
            refused(write, READ_ONLY)
    listed = [a.id for a in ro.beta.assistants.list(limit=100).data]
    assert {world["mine"].assistant, world["other"].assistant} <= set(listed)
    assert listed == [a.id for a in full.beta.assistants.list(limit=100).data]
    assert operations_called(ro) == every_operation()
    # Nothing changed.
    mine = world["mine"]
    assert full.beta.assistants.retrieve(mine.assistant).name == "mine"
    assert [m.id for m in full.beta.threads.messages.list(mine.thread).data][-1] == mine.message
    assert full.beta.threads.retrieve(mine.thread).metadata == {TAG: mine.assistant, "betaassi_session": "mine-1"}


def do_everything(api: openai.OpenAI, c: Conversation, spare_assistant: str) -> None:
    """Every operation, each answered as it would be without a scope, on one assistant and its threads.

    Cancelling and submitting tool outputs need a run in the matching status (the echo responder never asks for
    tools); on a finished run their 400 shows the request passed the scope and reached the store."""
    threads = api.beta.threads
    assert reads(api, c)["getAssistant"] == c.assistant
    assert api.beta.assistants.update(c.assistant, description="scoped").description == "scoped"
    thread = threads.create(metadata={TAG: c.assistant}, messages=[{"role": "user", "content": "hi"}])
    assert threads.update(thread.id, metadata={TAG: c.assistant, "x": "1"}).metadata == {TAG: c.assistant, "x": "1"}
    message = threads.messages.create(thread.id, role="user", content="more")
    assert threads.messages.update(message.id, thread_id=thread.id, metadata={"y": "2"}).metadata == {"y": "2"}
    assert threads.messages.delete(message.id, thread_id=thread.id).deleted is True
    run = threads.runs.create_and_poll(thread_id=thread.id, assistant_id=c.assistant, poll_interval_ms=20)
    assert run.status == "completed"
    assert threads.runs.update(run.id, thread_id=thread.id, metadata={"z": "3"}).metadata == {"z": "3"}
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'completed'"):
        threads.runs.cancel(run.id, thread_id=thread.id)
    with pytest.raises(openai.BadRequestError, match='Runs in status "completed" do not accept tool outputs'):
        threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                         tool_outputs=[{"tool_call_id": "call_1", "output": "x"}])
    both = threads.create_and_run_poll(assistant_id=c.assistant, thread={"metadata": {TAG: c.assistant}},
                                       poll_interval_ms=20)
    assert both.status == "completed"
    assert threads.delete(thread.id).deleted is True
    assert threads.delete(both.thread_id).deleted is True
    assert api.beta.assistants.delete(spare_assistant).deleted is True


def test_an_assistant_key_does_everything_on_its_assistant_and_its_threads(daphne_server, world):
    full = http_client(daphne_server)
    spare = full.beta.assistants.create(model="echo", name="spare").id
    mine = world["mine"]
    api = key_client(daphne_server, "--assistant", mine.assistant, "--assistant", spare)
    assert [a.id for a in api.beta.assistants.list(order="asc").data] == [mine.assistant, spare]
    do_everything(api, mine, spare)
    assert operations_called(api) == every_operation() - {"createAssistant"}
    refused(lambda: api.beta.assistants.create(model="echo"), "You have insufficient permissions for this "
            "operation: this API key is limited to some assistants, so it may not create assistants.")
    assert [a.id for a in api.beta.assistants.list().data] == [mine.assistant]


def test_a_full_key_does_everything(daphne_server, world):
    full = http_client(daphne_server)
    spare = full.beta.assistants.create(model="echo", name="spare").id
    do_everything(full, world["other"], spare)
    made = full.beta.assistants.create(model="echo", name="made")
    listed = {a.id for a in full.beta.assistants.list(limit=100).data}
    assert {world["mine"].assistant, world["other"].assistant, made.id} <= listed
    assert operations_called(full) == every_operation()


def test_an_assistant_key_is_refused_other_assistants_and_their_threads_as_unknown_ids(daphne_server, world):
    mine, other = world["mine"], world["other"]
    api = key_client(daphne_server, "--assistant", mine.assistant)
    unknown = Conversation("asst_unknown", "thread_unknown", "msg_unknown", "run_unknown", "step_unknown")
    threads = api.beta.threads
    for c in (other, unknown):
        refused(lambda c=c: api.beta.assistants.retrieve(c.assistant), outside("assistant", c.assistant))
        refused(lambda c=c: api.beta.assistants.update(c.assistant, name="x"), outside("assistant", c.assistant))
        refused(lambda c=c: api.beta.assistants.delete(c.assistant), outside("assistant", c.assistant))
        thread_calls = [
            lambda c=c: threads.retrieve(c.thread),
            lambda c=c: threads.update(c.thread, metadata={TAG: mine.assistant}),
            lambda c=c: threads.delete(c.thread),
            lambda c=c: threads.messages.list(c.thread),
            lambda c=c: threads.messages.create(c.thread, role="user", content="in"),
            lambda c=c: threads.messages.retrieve(c.message, thread_id=c.thread),
            lambda c=c: threads.messages.update(c.message, thread_id=c.thread, metadata={}),
            lambda c=c: threads.messages.delete(c.message, thread_id=c.thread),
            lambda c=c: threads.runs.list(c.thread),
            lambda c=c: threads.runs.create(c.thread, assistant_id=mine.assistant),
            lambda c=c: threads.runs.retrieve(c.run, thread_id=c.thread),
            lambda c=c: threads.runs.update(c.run, thread_id=c.thread, metadata={}),
            lambda c=c: threads.runs.cancel(c.run, thread_id=c.thread),
            lambda c=c: threads.runs.submit_tool_outputs(c.run, thread_id=c.thread,
                                                         tool_outputs=[{"tool_call_id": "call_1", "output": "x"}]),
            lambda c=c: threads.runs.steps.list(c.run, thread_id=c.thread),
            lambda c=c: threads.runs.steps.retrieve(c.step, thread_id=c.thread, run_id=c.run),
        ]
        for call in thread_calls:
            refused(call, outside("thread", c.thread))
        # Its own thread, another assistant's run; new threads for another assistant or for none.
        refused(lambda c=c: threads.runs.create(mine.thread, assistant_id=c.assistant),
                outside("assistant", c.assistant))
        tagged = {"metadata": {TAG: c.assistant}}
        refused(lambda c=c, tagged=tagged: threads.create_and_run(assistant_id=c.assistant, thread=tagged),
                outside("assistant", c.assistant))
    untagged = ("You have insufficient permissions for this operation: this API key is limited to some assistants, "
                "so a thread it creates or changes must name one of them in its metadata 'betaassi_assistant'.")
    refused(lambda: api.beta.assistants.create(model="echo"), "You have insufficient permissions for this "
            "operation: this API key is limited to some assistants, so it may not create assistants.")
    refused(lambda: api.beta.threads.create(), untagged)
    refused(lambda: api.beta.threads.create(metadata={TAG: other.assistant}), untagged)
    refused(lambda: api.beta.threads.create_and_run(assistant_id=mine.assistant), untagged)
    refused(lambda: api.beta.threads.update(mine.thread, metadata={TAG: other.assistant}), untagged)
    assert operations_called(api) == every_operation() - {"listAssistants"}
    assert [a.id for a in api.beta.assistants.list().data] == [mine.assistant]
    # Nothing of the other assistant changed.
    full = http_client(daphne_server)
    assert full.beta.assistants.retrieve(other.assistant).name == "other"
    assert full.beta.threads.messages.list(other.thread, order="asc").data[0].id == other.message


def test_the_queue_of_an_assistant_is_readable_and_its_publish_thread_takes_events(daphne_server):
    full = http_client(daphne_server)
    assistant = full.beta.assistants.create(model="echo", name="queued")
    queue = create_queue(full)  # what saving an assistant model does
    full.beta.assistants.update(assistant.id, metadata=queue)
    publish, root_id = queue[PUBLISH_KEY], queue[REGISTRY_KEY]
    [page] = Root.from_metadata(root_id, full.beta.threads.retrieve(root_id).metadata).page_ids
    api = key_client(daphne_server, "--assistant", assistant.id)
    for thread_id in (publish, root_id, page):
        assert api.beta.threads.retrieve(thread_id).id == thread_id
        assert api.beta.threads.messages.list(thread_id).data == []
    event = api.beta.threads.messages.create(publish, role="user", content='{"op": "session.create"}')
    assert [m.id for m in api.beta.threads.messages.list(publish).data] == [event.id]
    queue_only = ("You have insufficient permissions for this operation: thread '{}' is a publish thread or "
                  "registry of its assistant; with this API key it may only be read (and events added to the "
                  "publish thread): a full-access key changes it.")
    refused(lambda: api.beta.threads.update(root_id, metadata={"hwm": ""}), queue_only.format(root_id))
    refused(lambda: api.beta.threads.delete(page), queue_only.format(page))
    refused(lambda: api.beta.threads.delete(publish), queue_only.format(publish))
    refused(lambda: api.beta.threads.messages.create(page, role="user", content="x"), queue_only.format(page))
    refused(lambda: api.beta.threads.messages.delete(event.id, thread_id=publish), queue_only.format(publish))
    refused(lambda: api.beta.threads.runs.create(publish, assistant_id=assistant.id), queue_only.format(publish))
    other = full.beta.threads.create()
    refused(lambda: api.beta.assistants.update(assistant.id, metadata={**queue, REGISTRY_KEY: other.id}),
            "You have insufficient permissions for this operation: this API key is limited to some assistants, so "
            "it may not change the metadata 'betaassi_registry' of an assistant.")
    refused(lambda: api.beta.assistants.update(assistant.id, metadata={**queue, "betaassi_deployment": "elsewhere"}),
            "You have insufficient permissions for this operation: this API key is limited to some assistants, so "
            "it may not change the metadata 'betaassi_deployment' of an assistant.")
    refused(lambda: api.beta.threads.retrieve(other.id), outside("thread", other.id))
    assert api.beta.assistants.update(assistant.id, name="renamed", metadata={**queue, "x": "1"}).name == "renamed"
    reader = key_client(daphne_server, "--read-only", "--assistant", assistant.id)
    assert reader.beta.threads.retrieve(publish).id == publish
    refused(lambda: reader.beta.threads.messages.create(publish, role="user", content="x"), READ_ONLY)


def test_an_unknown_path_stays_404_for_a_read_only_key(daphne_server):
    raw = daphne_server.manage("create_api_key", "reader", "--read-only").strip().splitlines()[-1]
    response = httpx2.post(daphne_server.base_url + "/no/such/path", content=b"{}", timeout=30,
                           headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["message"]) == (404, "Invalid URL (POST /v1/no/such/path).")


@pytest.mark.django_db
def test_create_api_key_sets_the_scope():
    mine = Assistant.objects.create(model="echo", name="mine")
    other = Assistant.objects.create(model="echo", name="other")
    err = io.StringIO()
    call_command("create_api_key", "reader", "--read-only", "--assistant", other.id, "--assistant", mine.id,
                 stdout=io.StringIO(), stderr=err)
    key = ApiKey.objects.get(name="reader")
    assert (key.read_only, key.assistant_ids) == (True, sorted([mine.id, other.id]))
    assert f"scope: Read-only; assistants {', '.join(sorted([mine.id, other.id]))}." in err.getvalue()
    call_command("create_api_key", "all", stdout=io.StringIO(), stderr=(err := io.StringIO()))
    assert (ApiKey.objects.get(name="all").read_only, ApiKey.objects.get(name="all").assistant_ids) == (False, [])
    assert "scope: Full access." in err.getvalue()
    with pytest.raises(CommandError, match=r"^No assistant found with id asst_nope: no key was created\.$"):
        call_command("create_api_key", "typo", "--assistant", "asst_nope", "--assistant", mine.id,
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiKey.objects.filter(name="typo").exists()


def test_after_its_assistant_is_deleted_a_key_still_reaches_its_session_threads_but_not_its_queue(daphne_server):
    full = http_client(daphne_server)
    assistant = full.beta.assistants.create(model="echo", name="doomed")
    queue = create_queue(full)
    full.beta.assistants.update(assistant.id, metadata=queue)
    api = key_client(daphne_server, "--assistant", assistant.id)
    thread = api.beta.threads.create(metadata={TAG: assistant.id})
    assert api.beta.assistants.delete(assistant.id).deleted is True
    with pytest.raises(openai.NotFoundError):  # in scope, and gone
        api.beta.assistants.retrieve(assistant.id)
    assert api.beta.threads.retrieve(thread.id).metadata == {TAG: assistant.id}
    assert api.beta.threads.delete(thread.id).deleted is True
    publish = queue[PUBLISH_KEY]
    refused(lambda: api.beta.threads.retrieve(publish), outside("thread", publish))
    assert full.beta.threads.delete(publish).deleted is True
