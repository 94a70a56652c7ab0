"""Handlers of ``/v1/vector_stores`` (``http.endpoint`` makes them views); the store is ``vector_stores``.

Scopes: vector stores belong to no assistant, so a key limited to some assistants reaches none of them (403); a
read-only key may list and retrieve (``endpoint`` refuses its POST and DELETE). Every handler starts this process's
ingestion worker if it is not running (``ingestion.start``), so that files left by a process that died are taken
up by the first process the vector store API is used in.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from .. import scopes
from ..http import json_response, read_body
from ..limits import plausible_id
from ..models import VectorStore, VectorStoreFile
from ..pagination import bad_cursor, finish, plan
from . import ingestion, vector_stores
from .vector_stores import serialize_batch, serialize_file, serialize_store

#: What an in-progress file or batch tells a poller to wait, in milliseconds.
POLL_AFTER_MS = 200


def _reach(request: HttpRequest) -> None:
    scopes.check_unassigned(scopes.of_request(request), "vector stores")
    ingestion.start()


def _page(queryset: QuerySet, request: HttpRequest, serialize) -> dict:
    """``pagination.page`` with the page serialized at once (``serialize`` takes the list)."""

    def cursor_seq(name: str, object_id: str) -> int:
        found = queryset.filter(id=object_id) if plausible_id(object_id) else queryset.none()
        seq = found.values_list("seq", flat=True).first()
        if seq is None:
            raise bad_cursor(name, object_id)
        return seq

    chosen = plan(request.GET, cursor_seq)
    rows = queryset
    for op, seq in chosen.bounds:
        rows = rows.filter(**{f"seq__{op}": seq})
    items = list(rows.order_by("seq" if chosen.ascending else "-seq")[: chosen.limit + 1])
    return finish(items, chosen, serialize)


# Vector stores


def list_vector_stores(request: HttpRequest) -> dict:
    _reach(request)
    return _page(VectorStore.objects.all(), request, vector_stores.serialize_stores)


def create_vector_store(request: HttpRequest) -> dict:
    _reach(request)
    return serialize_store(vector_stores.create_store(read_body(request, "CreateVectorStoreRequest")))


def retrieve_vector_store(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    return serialize_store(vector_stores.get_store(vector_store_id))


def modify_vector_store(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    body = read_body(request, "UpdateVectorStoreRequest")
    return serialize_store(vector_stores.modify_store(vector_store_id, body))


def delete_vector_store(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    return vector_stores.delete_store(vector_store_id)


# Vector store files


def _files(request: HttpRequest, files: QuerySet) -> dict:
    listed = vector_stores.store_files(files, request.GET.get("filter"))
    return _page(listed, request, lambda page: [serialize_file(f) for f in page])


def list_files(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    store = vector_stores.get_store(vector_store_id)
    return _files(request, VectorStoreFile.objects.filter(vector_store=store))


def create_file(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    body = read_body(request, "CreateVectorStoreFileRequest")
    store = vector_stores.get_store(vector_store_id)
    vs_file = vector_stores.add_file(store, body["file_id"], chunking_strategy=body.get("chunking_strategy"),
                                     attributes=body.get("attributes"))
    return serialize_file(vs_file)


def _polled(data: dict) -> dict | HttpResponse:
    """An object still ``in_progress`` tells the SDKs' ``poll`` helpers when to ask again (OpenAI's
    ``openai-poll-after-ms`` header; without it they wait a second)."""
    if data["status"] != "in_progress":
        return data
    response = json_response(data)
    response["openai-poll-after-ms"] = str(POLL_AFTER_MS)
    return response


def retrieve_file(request: HttpRequest, vector_store_id: str, file_id: str) -> dict | HttpResponse:
    _reach(request)
    return _polled(serialize_file(vector_stores.get_store_file(vector_store_id, file_id)))


def update_file(request: HttpRequest, vector_store_id: str, file_id: str) -> dict:
    _reach(request)
    body = read_body(request, "UpdateVectorStoreFileAttributesRequest")
    return serialize_file(vector_stores.update_attributes(vector_store_id, file_id, body["attributes"]))


def delete_file(request: HttpRequest, vector_store_id: str, file_id: str) -> dict:
    _reach(request)
    return vector_stores.delete_store_file(vector_store_id, file_id)


def file_content(request: HttpRequest, vector_store_id: str, file_id: str) -> dict:
    """The file's parsed text as it is stored: one ``text`` item per chunk, in order (neighbouring chunks share
    their overlap); none before the file is ``completed``."""
    _reach(request)
    vs_file = vector_stores.get_store_file(vector_store_id, file_id)
    texts = vs_file.chunks.order_by("index").values_list("text", flat=True)
    return {"object": "vector_store.file_content.page", "data": [{"type": "text", "text": t} for t in texts],
            "has_more": False, "next_page": None}


# File batches


def create_batch(request: HttpRequest, vector_store_id: str) -> dict:
    _reach(request)
    body = read_body(request, "CreateVectorStoreFileBatchRequest")
    return serialize_batch(vector_stores.create_batch(vector_store_id, body))


def retrieve_batch(request: HttpRequest, vector_store_id: str, batch_id: str) -> dict | HttpResponse:
    _reach(request)
    return _polled(serialize_batch(vector_stores.get_batch(vector_store_id, batch_id)))


def cancel_batch(request: HttpRequest, vector_store_id: str, batch_id: str) -> dict:
    _reach(request)
    return serialize_batch(vector_stores.cancel_batch(vector_store_id, batch_id))


def list_batch_files(request: HttpRequest, vector_store_id: str, batch_id: str) -> dict:
    _reach(request)
    batch = vector_stores.get_batch(vector_store_id, batch_id)
    return _files(request, VectorStoreFile.objects.filter(batch=batch))
