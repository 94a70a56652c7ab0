"""Metadata-backed models: write-through, retrieve, listing by type, sync, async twins."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, NotSupportedError

from betaassi_django.client import get_client
from betaassi_django.models import Assistant, Message, Run, Thread
from tests.testapp.models import Kitchen, NotedMessage, StreamThread, Support, TaggedThread, TrackedRun


def test_the_seed_example(backend):
    st = StreamThread.objects.create()
    assert st.id.startswith("thread_")
    st.hwm = "msg_abc"
    st.save()
    assert StreamThread.retrieve(st.id).hwm == "msg_abc"
    assert StreamThread.objects.get(pk=st.id).hwm == "msg_abc"
    # The interoperability promise: any client reads the same metadata.
    assert get_client().beta.threads.retrieve(st.id).metadata == {"hwm": "msg_abc",
                                                                  "betaassi_type": "testapp.StreamThread"}


def test_calls_per_operation(backend):
    st = StreamThread.objects.create(hwm="a")
    backend.reset()
    st.hwm = "b"
    st.save()
    assert backend.requests == [("POST", f"/v1/threads/{st.id}")]
    backend.reset()
    StreamThread.retrieve(st.id)
    assert backend.requests == [("GET", f"/v1/threads/{st.id}")]


def test_save_sends_only_what_changed_and_keeps_another_writers_change(backend):
    support = Support.objects.create(name="Desk", model="gpt-4o-mini", tier=1)
    # Another process renames the assistant after we read it; we change only the tier.
    get_client().beta.assistants.update(support.id, name="Renamed elsewhere")
    support.tier = 2
    support.save()
    remote = get_client().beta.assistants.retrieve(support.id)
    assert (remote.name, remote.model, remote.metadata["tier"]) == ("Renamed elsewhere", "gpt-4o-mini", "2")
    mirror = Support.objects.get(pk=support.id)  # the mirror holds what the backend answered
    assert (mirror.name, mirror.tier) == ("Renamed elsewhere", 2)
    # A field we change is sent (and an unchanged object still makes its one modify, returning the backend's state).
    mirror.instructions = "Be brief."
    mirror.save()
    assert get_client().beta.assistants.retrieve(support.id).instructions == "Be brief."
    backend.reset()
    mirror.save()
    assert backend.requests == [("POST", f"/v1/assistants/{support.id}")]


def test_objects_read_with_deferred_fields_load_and_save(backend):
    support = Support.objects.create(name="Desk", model="gpt-4o-mini", tier=1)
    # only() and defer() leave fields out of the read: reading one later loads it, without recursion.
    partial = Support.objects.only("id", "name").get(pk=support.id)
    assert (partial.name, partial.model, partial.tier) == ("Desk", "gpt-4o-mini", 1)
    deferred = Support.objects.defer("metadata").get(pk=support.id)
    assert deferred.tier == 1
    # Nothing is known of what the backend held, so its save sends every field: the backend gets them all.
    partial.tier = 3
    backend.reset()
    partial.save()
    assert backend.requests == [("POST", f"/v1/assistants/{support.id}")]
    remote = get_client().beta.assistants.retrieve(support.id)
    assert (remote.name, remote.model, remote.metadata["tier"]) == ("Desk", "gpt-4o-mini", "3")
    assert Support.objects.get(pk=support.id).tier == 3


def test_assistant_docstring_is_default_instructions(backend):
    support = Support.objects.create(name="Help desk", model="gpt-4o-mini", tier=2)
    remote = get_client().beta.assistants.retrieve(support.id)
    assert remote.instructions == "You answer support questions politely."
    assert (remote.name, remote.model) == ("Help desk", "gpt-4o-mini")
    queue = {k: v for k, v in remote.metadata.items() if k in ("betaassi_publish", "betaassi_registry")}
    assert [v[:7] for v in queue.values()] == ["thread_", "thread_"]  # the publish queue, made with it
    assert remote.metadata == {"tier": "2", "escalate": "false", "betaassi_type": "testapp.Support", **queue}
    explicit = Support.objects.create(instructions="Other.")
    assert get_client().beta.assistants.retrieve(explicit.id).instructions == "Other."
    assert Assistant.objects.create().instructions is None


def test_remote_is_the_source_of_truth(backend):
    support = Support.objects.create(tier=1)
    get_client().beta.assistants.update(
        support.id, name="Changed elsewhere", metadata={"tier": "5", "escalate": "true",
                                                        "betaassi_type": "testapp.Support", "other": "x"})
    support.refresh_from_backend()
    assert (support.name, support.tier, support.escalate) == ("Changed elsewhere", 5, True)
    mirror = Support.objects.get(pk=support.id)
    assert (mirror.name, mirror.tier, mirror.escalate) == ("Changed elsewhere", 5, True)
    # A key another process wrote survives our next save.
    support.tier = 6
    support.save()
    assert get_client().beta.assistants.retrieve(support.id).metadata == {
        "tier": "6", "escalate": "true", "betaassi_type": "testapp.Support", "other": "x"}


def test_delete_deletes_remotely(backend):
    import openai

    st = StreamThread.objects.create()
    thread_id = st.id
    st.delete()
    assert not StreamThread.objects.filter(pk=thread_id).exists()
    with pytest.raises(openai.NotFoundError):
        get_client().beta.threads.retrieve(thread_id)


def test_messages_and_runs(backend):
    support = Support.objects.create(model="echo")
    thread = Thread.objects.create()
    note = NotedMessage.objects.create(thread_id=thread.id, content="hello", note="first")
    assert (note.id[:4], note.role, note.status) == ("msg_", "user", "completed")
    note.note = "changed"
    note.save()
    assert NotedMessage.retrieve(note.id, thread_id=thread.id).note == "changed"

    run = TrackedRun.objects.create(thread_id=thread.id, assistant_id=support.id, ticket="T-1")
    assert run.status == "queued" and run.model == "echo"
    deadline = 200
    while run.status not in ("completed", "failed") and deadline:
        run.refresh_from_backend()
        deadline -= 1
    assert run.status == "completed" and run.completed_at is not None
    assert TrackedRun.retrieve(run.id, thread_id=thread.id).ticket == "T-1"
    with pytest.raises(NotSupportedError):
        run.delete()

    replies = Message.list_remote(thread_id=thread.id)
    assert replies == []  # the reply has no betaassi_type: it is nobody's Message
    notes = NotedMessage.list_remote(thread_id=thread.id)
    assert [n.id for n in notes] == [note.id]
    note.delete()
    assert NotedMessage.list_remote(thread_id=thread.id) == []
    assert Run.objects.count() == 0 and TrackedRun.objects.count() == 1


def test_listing_by_type_pages(backend):
    ids = {"support": [], "kitchen": []}
    for index in range(250):
        if index % 2:
            ids["kitchen"].append(Kitchen.objects.create(count=index).id)
        else:
            ids["support"].append(Support.objects.create(tier=index).id)
    backend.reset()
    supports = Support.list_remote()
    assert backend.calls("GET") == 3  # ceil(250 / 100) list calls, nothing else
    assert [s.id for s in supports] == ids["support"]
    assert [s.tier for s in supports] == list(range(0, 250, 2))
    assert [k.count for k in Kitchen.list_remote()] == list(range(1, 250, 2))


def test_sync_from_backend(backend, capsys):
    kept = Support.objects.create(tier=1)
    gone = Support.objects.create(tier=2)
    thread = StreamThread.objects.create(hwm="x")
    get_client().beta.assistants.delete(gone.id)
    get_client().beta.assistants.update(kept.id, metadata={"tier": "9", "escalate": "false",
                                                           "betaassi_type": "testapp.Support"})
    get_client().beta.threads.update(thread.id, metadata={"hwm": "y", "betaassi_type": "testapp.StreamThread"})
    lost = Thread.objects.create()
    get_client().beta.threads.delete(lost.id)

    call_command("sync_from_backend")
    out = capsys.readouterr().out
    assert "testapp.Support: 0 created, 1 updated, 1 removed" in out
    assert Support.objects.get(pk=kept.id).tier == 9
    assert not Support.objects.filter(pk=gone.id).exists()
    assert StreamThread.objects.get(pk=thread.id).hwm == "y"
    assert not Thread.objects.filter(pk=lost.id).exists()


def test_invalid_values_fail_before_any_request(backend):
    backend.reset()
    with pytest.raises(ValidationError) as info:
        Kitchen(short="x" * 21).save()
    assert set(info.value.message_dict) == {"short"}
    with pytest.raises(ValidationError) as info:
        Kitchen(color="blue").save()
    assert set(info.value.message_dict) == {"color"}
    with pytest.raises(ValidationError) as info:
        Kitchen(text="t" * (512 * 15)).save()  # 15 chunks + betaassi_type + the others: too many keys
    assert "text" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        Kitchen(count="many").save()
    assert set(info.value.message_dict) == {"count"}
    assert backend.requests == []


def test_long_values_are_chunked(backend):
    text = "".join(chr(0x41 + i % 26) for i in range(1300))
    kitchen = Kitchen.objects.create(text=text)
    metadata = get_client().beta.assistants.retrieve(kitchen.id).metadata
    assert (metadata["text"], metadata["text.1"], metadata["text.2"]) == (text[:512], text[512:1024], text[1024:])
    assert Kitchen.retrieve(kitchen.id).text == text


def test_failed_mirror_insert_undoes_the_remote_create(backend):
    import openai

    TaggedThread.objects.create(tag="same")
    backend.reset()
    with pytest.raises(IntegrityError):
        TaggedThread.objects.create(tag="same")
    (create, delete) = backend.requests
    assert create == ("POST", "/v1/threads") and delete[0] == "DELETE"
    orphan = delete[1].rsplit("/", 1)[1]
    with pytest.raises(openai.NotFoundError):
        get_client().beta.threads.retrieve(orphan)
    assert TaggedThread.objects.count() == 1


def test_failed_mirror_update_puts_the_remote_back(backend):
    TaggedThread.objects.create(tag="a")
    second = TaggedThread.objects.create(tag="b")
    second = TaggedThread.objects.get(pk=second.id)
    second.tag = "a"
    with pytest.raises(IntegrityError):
        second.save()
    assert get_client().beta.threads.retrieve(second.id).metadata == {"tag": "b",
                                                                      "betaassi_type": "testapp.TaggedThread"}
    assert TaggedThread.objects.get(pk=second.id).tag == "b"


def test_backend_failure_changes_nothing_locally(backend):
    import openai

    st = StreamThread.objects.create(hwm="kept")
    get_client().beta.threads.delete(st.id)
    st.hwm = "new"
    with pytest.raises(openai.NotFoundError):
        st.save()
    assert StreamThread.objects.get(pk=st.id).hwm == "kept"


def test_querysets_do_not_bypass_the_backend(backend):
    StreamThread.objects.create()
    with pytest.raises(NotSupportedError):
        StreamThread.objects.update(hwm="x")
    with pytest.raises(NotSupportedError):
        StreamThread.objects.bulk_create([StreamThread()])
    assert StreamThread.objects.all().delete() == (1, {"testapp.StreamThread": 1})


async def test_async_twins(backend):
    from asgiref.sync import sync_to_async

    st = await StreamThread.objects.acreate(hwm="one")
    st.hwm = "two"
    await st.asave()
    fetched = await StreamThread.aretrieve(st.id)
    assert fetched.hwm == "two"
    assert (await StreamThread.objects.aget(pk=st.id)).hwm == "two"
    support = await Support.objects.acreate(tier=4)
    assert [s.tier for s in await Support.alist_remote()] == [4]
    thread_id = st.id
    await st.adelete()
    assert not await sync_to_async(StreamThread.objects.filter(pk=thread_id).exists)()
    await support.arefresh_from_backend()
    assert support.tier == 4
