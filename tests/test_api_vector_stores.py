"""Vector stores, their files and file batches through the openai SDK, in-process and over HTTP, every response
validated against the specification; ingestion runs in the serving process's worker thread."""

from __future__ import annotations

import time

import openai
import pytest

from betaassi_django.assistants_api.knowledge import ingestion, vector_stores
from betaassi_django.assistants_api.models import File, VectorStore, VectorStoreFile, VectorStoreFileBatch
from tests.conftest import in_process_client
from tests.test_api_hostile import raw_client
from tests.test_api_scopes import forbidden, key_client, refused

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"poll_interval_ms": 20, "max_wait_seconds": 60}
AUTO = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


def upload(client, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def settled(client, store_id: str):
    """The store once no file is in progress (polled with a deadline)."""
    deadline = time.monotonic() + 60
    while True:
        store = client.vector_stores.retrieve(store_id)
        if store.status != "in_progress":
            return store
        assert time.monotonic() < deadline, store
        time.sleep(0.02)


def error_of(caught) -> dict:
    return caught.value.response.json()["error"]


def test_vector_store_lifecycle(client):
    one, two = upload(client, "one.txt", b"alpha beta"), upload(client, "two.md", b"# gamma")
    store = client.vector_stores.create(name="docs", file_ids=[one, two], metadata={"team": "a"},
                                        expires_after={"anchor": "last_active_at", "days": 2})
    assert store.id.startswith("vs_") and (store.object, store.name, store.metadata) == ("vector_store", "docs",
                                                                                          {"team": "a"})
    assert store.expires_after.model_dump() == {"anchor": "last_active_at", "days": 2}
    assert store.expires_at == store.last_active_at + 2 * 86400 and abs(store.created_at - time.time()) < 60
    assert store.file_counts.total == 2
    done = settled(client, store.id)
    assert done.status == "completed"
    assert done.file_counts.model_dump() == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0,
                                             "total": 2}
    assert done.usage_bytes == len(b"alpha beta") + len(b"# gamma")

    changed = client.vector_stores.update(store.id, name="renamed", metadata={"team": "b"},
                                          expires_after={"anchor": "last_active_at", "days": 7})
    assert (changed.name, changed.metadata, changed.expires_at) == ("renamed", {"team": "b"},
                                                                     store.last_active_at + 7 * 86400)
    cleared = client.vector_stores.update(store.id, expires_after=None, name=None)
    assert (cleared.expires_after, cleared.expires_at, cleared.name) == (None, None, "")

    deleted = client.vector_stores.delete(store.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (store.id, "vector_store.deleted", True)
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.retrieve(store.id)
    assert error_of(caught)["message"] == f"No vector store found with id '{store.id}'."
    assert client.files.retrieve(one).id == one  # the files stay


def test_a_store_name_has_no_length_limit_but_the_body_size(client):
    """The specification gives ``name`` no maxLength: a long name is kept whole on every database (a 500 on
    PostgreSQL once, when the column was varchar(256))."""
    long_name = "x" * 300_000
    store = client.vector_stores.create(name=long_name)
    assert store.name == long_name
    renamed = client.vector_stores.update(store.id, name=long_name + "y")
    assert client.vector_stores.retrieve(store.id).name == renamed.name == long_name + "y"


def test_list_vector_stores_pages(client):
    made = [client.vector_stores.create(name=f"s{i}").id for i in range(3)]
    newest = client.vector_stores.list(limit=2)
    assert [s.id for s in newest.data] == made[::-1][:2] and newest.has_more
    after = client.vector_stores.list(limit=1, after=made[2])
    assert [s.id for s in after.data] == [made[1]]
    ascending = client.vector_stores.list(order="asc", after=made[0], limit=2)
    assert [s.id for s in ascending.data] == made[1:]
    before = client.vector_stores.list(order="asc", before=made[2], limit=1)
    assert [s.id for s in before.data] == [made[1]]
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.list(after="asst_abc")
    assert error_of(caught)["param"] == "after"


def test_vector_store_files(client):
    store = client.vector_stores.create(name="files")
    text = b"The quick brown fox jumps over the lazy dog."
    vs_file = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("fox.txt", text), **FAST)
    assert (vs_file.object, vs_file.status, vs_file.last_error, vs_file.vector_store_id) == (
        "vector_store.file", "completed", None, store.id)
    assert vs_file.chunking_strategy.model_dump() == AUTO and vs_file.usage_bytes == len(text)

    other = upload(client, "other.txt", b"second file")
    created = client.vector_stores.files.create(vector_store_id=store.id, file_id=other, attributes={"k": "v", "n": 2},
                                                chunking_strategy={"type": "static", "static": {
                                                    "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}})
    assert created.id == other and created.attributes == {"k": "v", "n": 2}
    assert created.chunking_strategy.model_dump() == {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                                                   "chunk_overlap_tokens": 50}}
    polled = client.vector_stores.files.poll(other, vector_store_id=store.id, **FAST)
    assert polled.status == "completed"

    listed = client.vector_stores.files.list(vector_store_id=store.id, order="asc")
    assert [f.id for f in listed.data] == [vs_file.id, other] and not listed.has_more
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, filter="completed",
                                                          limit=1).data] == [other]
    assert client.vector_stores.files.list(vector_store_id=store.id, filter="failed").data == []
    page = client.vector_stores.files.list(vector_store_id=store.id, after=other)
    assert [f.id for f in page.data] == [vs_file.id]

    fetched = client.vector_stores.files.retrieve(other, vector_store_id=store.id)
    assert fetched.model_dump() == polled.model_dump()
    updated = client.vector_stores.files.update(other, vector_store_id=store.id, attributes={"k": "w", "ok": True})
    assert updated.attributes == {"k": "w", "ok": True}

    content = client.vector_stores.files.content(vs_file.id, vector_store_id=store.id)
    assert [(c.type, c.text) for c in content.data] == [("text", text.decode())]

    deleted = client.vector_stores.files.delete(other, vector_store_id=store.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (other, "vector_store.file.deleted", True)
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.files.retrieve(other, vector_store_id=store.id)
    assert error_of(caught)["message"] == f"No file found with id '{other}'."
    assert client.files.retrieve(other).id == other
    final = client.vector_stores.retrieve(store.id)
    assert final.file_counts.total == 1 and final.usage_bytes == len(text)


def test_a_file_that_cannot_be_parsed_fails_the_file_not_the_store(client):
    store = client.vector_stores.create()
    broken = client.vector_stores.files.upload_and_poll(vector_store_id=store.id,
                                                        file=("scan.pdf", b"%PDF-1.7 not really"), **FAST)
    assert broken.status == "failed" and broken.last_error.code == "invalid_file"
    assert broken.last_error.message.startswith("The file could not be read as a PDF")
    store = settled(client, store.id)
    assert (store.status, store.file_counts.failed, store.usage_bytes) == ("completed", 1, 0)
    assert client.vector_stores.files.content(broken.id, vector_store_id=store.id).data == []
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, filter="failed").data] == [
        broken.id]
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[upload(client, "blank.txt", b" \n"), upload(client, "nul.md", b"\x00")],
        poll_interval_ms=20)
    assert batch.status == "failed" and batch.file_counts.failed == 2  # every file failed


def test_file_batches(client):
    store = client.vector_stores.create()
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[("a.txt", b"apple"), ("b.html", b"<p>banana</p><script>x</script>")],
        poll_interval_ms=20)
    assert (batch.object, batch.status, batch.vector_store_id) == ("vector_store.files_batch", "completed", store.id)
    assert batch.file_counts.model_dump() == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0,
                                              "total": 2}
    again = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert again.model_dump() == batch.model_dump()
    files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, order="asc")
    texts = [client.vector_stores.files.content(f.id, vector_store_id=store.id).data[0].text for f in files.data]
    assert sorted(texts) == ["apple", "banana"]

    one, two = upload(client, "c.txt", b"cherry"), upload(client, "d.txt", b"date")
    per_file = client.vector_stores.file_batches.create(vector_store_id=store.id, files=[
        {"file_id": one, "attributes": {"fruit": "cherry"}},
        {"file_id": two, "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 200,
                                                                            "chunk_overlap_tokens": 0}}}])
    done = client.vector_stores.file_batches.poll(per_file.id, vector_store_id=store.id, poll_interval_ms=20)
    assert done.file_counts.completed == 2
    listed = {f.id: f for f in client.vector_stores.file_batches.list_files(per_file.id, vector_store_id=store.id,
                                                                            filter="completed").data}
    assert listed[one].attributes == {"fruit": "cherry"} and listed[one].chunking_strategy.model_dump() == AUTO
    assert listed[two].attributes is None and listed[two].chunking_strategy.static.chunk_overlap_tokens == 0

    shared = client.vector_stores.file_batches.create(
        vector_store_id=store.id, file_ids=[upload(client, "e.txt", b"elder")], attributes={"all": True})
    shared = client.vector_stores.file_batches.poll(shared.id, vector_store_id=store.id, poll_interval_ms=20)
    assert [f.attributes for f in client.vector_stores.file_batches.list_files(
        shared.id, vector_store_id=store.id).data] == [{"all": True}]
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 5


def test_cancelling_a_batch_stops_its_files(client):
    store = client.vector_stores.create()
    big = ("".join(f" word{i}" for i in range(60000))).encode()
    ids = [upload(client, f"big{i}.txt", big) for i in range(12)]
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled >= 1
    store = settled(client, store.id)
    files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, limit=100).data
    assert {f.status for f in files} <= {"completed", "cancelled"} and len(files) == 12
    for vs_file in files:
        chunks = client.vector_stores.files.content(vs_file.id, vector_store_id=store.id).data
        assert (len(chunks) > 0) == (vs_file.status == "completed")
    cancelled_files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id,
                                                                  filter="cancelled").data
    assert len(cancelled_files) == cancelled.file_counts.cancelled
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert error_of(caught)["message"] == "Cannot cancel a vector store file batch whose status is 'cancelled'."


STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 51}}


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"file_ids": ["file-nope"]}, "file_ids[0]", "No such File object: file-nope"),
    ({"chunking_strategy": STATIC}, "chunking_strategy.static.chunk_overlap_tokens",
     "Invalid 'chunking_strategy.static.chunk_overlap_tokens': chunk_overlap_tokens (51) must not exceed half of "
     "max_chunk_size_tokens (100)."),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}},
     "chunking_strategy", None),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 4097,
                                                         "chunk_overlap_tokens": 0}}}, "chunking_strategy", None),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                         "chunk_overlap_tokens": -1}}},
     "chunking_strategy.static.chunk_overlap_tokens", None),
    ({"expires_after": {"anchor": "last_active_at", "days": 366}}, "expires_after.days", None),
    ({"expires_after": {"anchor": "last_active_at", "days": 10**40}}, "expires_after.days", None),
])
def test_bad_store_bodies_are_400_naming_the_param(client, body, param, message):
    before = len(client.vector_stores.list(limit=100).data)
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
        client.vector_stores.create(**body)
    error = error_of(caught)
    assert error["param"].startswith(param), error
    if message is not None:
        assert error["message"] == message
    assert len(client.vector_stores.list(limit=100).data) == before  # nothing written


def test_bad_file_ids_are_refused_naming_the_param(client):
    store = client.vector_stores.create()
    assistant = client.beta.assistants.create(model="echo")
    for wrong in ("file-nope", store.id, assistant.id, "x" * 500, "file-\u00e9"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.vector_stores.files.create(vector_store_id=store.id, file_id=wrong)
        assert error_of(caught)["param"] == "file_id"
    real = upload(client, "r.txt", b"real")
    client.vector_stores.files.create(vector_store_id=store.id, file_id=real)
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.files.create(vector_store_id=store.id, file_id=real)
    assert error_of(caught) == {"message": f"File '{real}' is already in vector store '{store.id}'.",
                                "type": "invalid_request_error", "param": "file_id", "code": "duplicate_file"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[upload(client, "n.txt", b"n")] * 2)
    assert error_of(caught)["param"] == "file_ids[1]"
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.file_batches.create(vector_store_id=store.id, files=[{"file_id": real + "x"}])
    assert error_of(caught)["param"] == "files[0].file_id"
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[real], files=[{"file_id": real}])
    assert error_of(caught)["param"] == "files"
    fresh = upload(client, "f.txt", b"f")
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.file_batches.create(vector_store_id=store.id, files=[{"file_id": fresh},
                                                                                  {"file_id": real}])
    assert error_of(caught)["param"] == "files[1].file_id" and error_of(caught)["code"] == "duplicate_file"
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.file_batches.create(vector_store_id=store.id, files=[
            {"file_id": fresh}, {"file_id": upload(client, "g.txt", b"g"), "chunking_strategy": STATIC}])
    assert error_of(caught)["param"] == "files[1].chunking_strategy.static.chunk_overlap_tokens"
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1  # nothing of the refused batches
    for call in (lambda: client.vector_stores.retrieve(assistant.id),
                 lambda: client.vector_stores.files.list(vector_store_id="vs_" + "9" * 40),
                 lambda: client.vector_stores.file_batches.retrieve(store.id, vector_store_id=store.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.files.list(vector_store_id=store.id, filter="done")
    assert error_of(caught)["param"] == "filter"
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.files.update(real, vector_store_id=store.id, attributes={f"k{i}": i for i in range(17)})
    assert error_of(caught)["param"] == "attributes"


def test_scopes_of_vector_stores(daphne_server):
    full = key_client(daphne_server)
    store = full.vector_stores.create(name="scoped")
    reader = key_client(daphne_server, "--read-only")
    assert reader.vector_stores.retrieve(store.id).id == store.id
    assert store.id in [s.id for s in reader.vector_stores.list(limit=100).data]
    refused(lambda: reader.vector_stores.create(),
            "You have insufficient permissions for this operation: this API key is read-only (GET requests only).")
    refused(lambda: reader.vector_stores.delete(store.id),
            "You have insufficient permissions for this operation: this API key is read-only (GET requests only).")
    assistant = full.beta.assistants.create(model="echo")
    limited = key_client(daphne_server, "--assistant", assistant.id)
    message = ("You have insufficient permissions for this operation: this API key is limited to some assistants "
               "and their threads, and vector stores belong to no assistant: use a key without that limit.")
    for call in (lambda: limited.vector_stores.list(), lambda: limited.vector_stores.retrieve(store.id),
                 lambda: limited.vector_stores.create(), lambda: limited.vector_stores.files.list(store.id)):
        refused(call, message)
    assert forbidden(message)["error"]["code"] == "insufficient_permissions"


@pytest.fixture(params=["in_process", "http"])
def api(request):
    """httpx2 sending bodies exactly as given (lone surrogates, 40-digit numbers), every response validated."""
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    with raw_client(request.param, server) as client:
        yield client


@pytest.mark.parametrize(("path", "raw", "param"), [
    ("/vector_stores", '{"name": "\\ud800"}', "name"),
    ("/vector_stores", '{"metadata": {"k": "a\\udfffb"}}', "metadata.k"),
    ("/vector_stores", '{"file_ids": ["\\ud83d"]}', "file_ids[0]"),
    ("/vector_stores", '{"expires_after": {"anchor": "last_active_at", "days": ' + "9" * 40 + "}}",
     "expires_after.days"),
    ("/vector_stores", '{"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800, '
                       '"chunk_overlap_tokens": 1e309}}}', None),
    ("/vector_stores", "[" * 200 + "]" * 200, None),
    ("/vector_stores", '{"name": ' + '{"a": ' * 100 + '1' + '}' * 100 + '}', None),
    ("{store}/files", '{"file_id": "\\ud800"}', "file_id"),
    ("{store}/files", '{"file_id": "file-x", "attributes": {"k": "' + "v" * 513 + '"}}', "attributes.k"),
    ("{store}/file_batches", '{"file_ids": []}', "file_ids"),
    ("{store}/file_batches", '{}', "file_ids"),
    ("{store}/file_batches", '{"file_ids": [' + ",".join(['"file-x"'] * 2001) + "]}", "file_ids"),
])
def test_hostile_bodies_are_400(api, path, raw, param):
    store = api.post("/vector_stores", json={}).json()["id"]
    response = api.post(path.format(store=f"/vector_stores/{store}"), content=raw.encode())
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    if param is not None:
        assert error["param"] == param, error
    assert api.get(f"/vector_stores/{store}").json()["file_counts"]["total"] == 0


def test_touch_moves_the_expiry_and_an_expired_store_takes_no_files():
    """In-process only: the test moves the clock of stores in its own database."""
    client = in_process_client()
    store = client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 1})
    plain = client.vector_stores.create()
    long_ago = store.last_active_at - 10 * 86400
    VectorStore.objects.filter(id__in=[store.id, plain.id]).update(last_active_at=long_ago,
                                                                     expires_at=long_ago + 86400)
    assert client.vector_stores.retrieve(store.id).status == "expired"
    vector_stores.touch([store.id, plain.id])
    assert client.vector_stores.retrieve(store.id).status == "expired"  # an expired store stays expired
    VectorStore.objects.filter(id=store.id).update(expires_at=None)
    vector_stores.touch([store.id, plain.id, "vs_unknown"])
    fresh = client.vector_stores.retrieve(store.id)
    assert fresh.status == "completed" and fresh.last_active_at >= store.last_active_at
    assert fresh.expires_at == fresh.last_active_at + 86400
    gone = upload(client, "gone.txt", b"expired file")
    File.objects.filter(id=gone).update(expires_at=fresh.last_active_at - 1)
    for call in (lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id=gone),
                 lambda: client.vector_stores.create(file_ids=[gone])):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert error_of(caught)["message"] == f"No such File object: {gone}"
    VectorStore.objects.filter(id=store.id).update(expires_at=fresh.last_active_at - 1)
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.files.create(vector_store_id=store.id, file_id=upload(client, "x.txt", b"x"))
    assert error_of(caught) == {"message": f"Vector store '{store.id}' has expired: it takes no more files.",
                                "type": "invalid_request_error", "param": "vector_store_id",
                                "code": "vector_store_expired"}


def test_an_object_in_progress_tells_pollers_when_to_ask_again():
    """In-process only: the file is added without waking the worker, so it is still in progress when read."""
    client = in_process_client()
    store = client.vector_stores.create()
    file_id = upload(client, "p.txt", b"poll")
    batch = VectorStoreFileBatch.objects.create(vector_store=VectorStore.objects.get(id=store.id))
    VectorStoreFile.objects.create(vector_store=batch.vector_store, file_id=file_id, batch=batch)
    raw = client.vector_stores.files.with_raw_response.retrieve(file_id, vector_store_id=store.id)
    assert raw.headers["openai-poll-after-ms"] == "200" and raw.parse().status == "in_progress"
    # A file row without a chunking strategy (as rows made before one was recorded) reports "other".
    assert raw.parse().chunking_strategy.type == "other"
    raw = client.vector_stores.file_batches.with_raw_response.retrieve(batch.id, vector_store_id=store.id)
    assert raw.headers["openai-poll-after-ms"] == "200" and raw.parse().status == "in_progress"
    deadline = time.monotonic() + 30
    while VectorStoreFile.objects.filter(file_id=file_id, status="in_progress").exists():  # here or the worker
        assert time.monotonic() < deadline, "the file stayed in_progress"
        ingestion.run_pending()
        time.sleep(0.05)
    raw = client.vector_stores.files.with_raw_response.retrieve(file_id, vector_store_id=store.id)
    assert "openai-poll-after-ms" not in raw.headers and raw.parse().status == "completed"
