"""``tool_resources`` and message ``attachments``: the vector stores a run's ``file_search`` reads.

``tool_resources.file_search`` names at most one vector store (``vector_store_ids``) on an assistant or a thread,
or creates it (``vector_stores``: the helper that makes a store from ``file_ids``); what is stored and returned is
always ``vector_store_ids``. A message's ``attachments`` name files; one attached with the ``file_search`` tool is
added to the thread's vector store, which is created on demand (as OpenAI does: it expires 7 days after it was
last active) and recorded in the thread's ``tool_resources``. Every id is checked before anything is written: an
unknown one is a 400 naming its param.
"""

from __future__ import annotations

from django.db import transaction

from ..errors import invalid
from ..limits import plausible_id
from ..models import File, Thread, VectorStore, VectorStoreFile
from . import ingestion, vector_stores

#: The expiry of a vector store created for a thread's attachments (OpenAI's default for them).
THREAD_STORE_EXPIRY = {"anchor": "last_active_at", "days": 7}


def _unknown_file(file_id: str, param: str):
    return invalid(f"Invalid '{param}': no file with id '{file_id[:100]}'.", param=param, code="invalid_value")


def _check_files(file_ids: list[tuple[str, str]]) -> None:
    """Each ``(file id, param)`` names a File (one query)."""
    wanted = {f for f, _ in file_ids if isinstance(f, str) and plausible_id(f)}
    known = set(File.objects.filter(id__in=wanted).values_list("id", flat=True)) if wanted else set()
    for file_id, param in file_ids:
        if file_id not in known:
            raise _unknown_file(str(file_id), param)


def resolve(value: dict | None, param: str) -> dict | None:
    """Request ``tool_resources`` (valid against the specification's schema) -> the stored ones: the named store
    checked, or the helper's store created; a 400 naming the param before anything is written."""
    if value is None or not isinstance(value.get("file_search"), dict):
        return value
    search = value["file_search"]
    ids = search.get("vector_store_ids") or []
    helpers = search.get("vector_stores") or []
    if len(ids) + len(helpers) > 1:
        raise invalid(f"Invalid '{param}.file_search': there can be a maximum of 1 vector store attached (got "
                      f"{len(ids) + len(helpers)}).", param=f"{param}.file_search", code="invalid_value")
    for index, store_id in enumerate(ids):
        if not (plausible_id(store_id) and VectorStore.objects.filter(id=store_id).exists()):
            raise invalid(f"Invalid '{param}.file_search.vector_store_ids[{index}]': no vector store with id "
                          f"'{store_id[:100]}'.", param=f"{param}.file_search.vector_store_ids[{index}]",
                          code="invalid_value")
    for index, helper in enumerate(helpers):
        where = f"{param}.file_search.vector_stores[{index}]"
        file_ids = helper.get("file_ids") or []
        _check_files([(f, f"{where}.file_ids[{i}]") for i, f in enumerate(file_ids)])
        if len(set(file_ids)) != len(file_ids):
            raise invalid(f"Invalid '{where}.file_ids': a file is listed twice.", param=f"{where}.file_ids",
                          code="invalid_value")
        vector_stores.chunking(helper.get("chunking_strategy"), f"{where}.chunking_strategy")
    if helpers:
        created = vector_stores.create_store({"file_ids": helpers[0].get("file_ids") or [],
                                              "chunking_strategy": helpers[0].get("chunking_strategy"),
                                              "metadata": helpers[0].get("metadata")})
        ids = [created.id]
        transaction.on_commit(ingestion.schedule)  # create_store woke the worker inside the caller's transaction
    kept = {k: v for k, v in search.items() if k != "vector_stores"}
    return {**value, "file_search": {**kept, "vector_store_ids": list(ids)}}


def check_attachments(messages: list[dict], param: str) -> list[str]:
    """The messages' attachments name files (a 400 naming e.g. ``messages[2].attachments[0].file_id``); returns
    the ids of those attached with ``file_search``, in order, once each. ``param``: the messages' list (``""``
    for one message's own ``attachments``)."""
    named, searched = [], []
    for m_index, message in enumerate(messages):
        prefix = f"{param}[{m_index}]." if param else ""
        for a_index, attachment in enumerate(message.get("attachments") or []):
            file_id = attachment.get("file_id")
            named.append((file_id, f"{prefix}attachments[{a_index}].file_id"))
            if any(isinstance(t, dict) and t.get("type") == "file_search" for t in attachment.get("tools") or []):
                searched.append(file_id)
    _check_files(named)
    return list(dict.fromkeys(searched))


def attach(thread: Thread, file_ids: list[str]) -> None:
    """Add files to the thread's vector store, created on demand and recorded in ``tool_resources`` (of the row,
    and of the caller's ``thread``), inside the caller's transaction; the files were checked by
    ``check_attachments``."""
    if not file_ids:
        return
    given, thread = thread, Thread.objects.select_for_update().get(pk=thread.pk)
    resources = dict(thread.tool_resources or {})
    search = dict(resources.get("file_search") or {})
    ids = search.get("vector_store_ids") or []
    store = VectorStore.objects.filter(id=ids[0]).first() if ids else None
    if store is None:
        store = vector_stores.create_store({"name": f"Attachments of {thread.id}",
                                            "expires_after": THREAD_STORE_EXPIRY})
        resources["file_search"] = {**search, "vector_store_ids": [store.id]}
        thread.tool_resources = given.tool_resources = resources
        thread.save(update_fields=["tool_resources"])
    present = set(VectorStoreFile.objects.filter(vector_store=store, file_id__in=file_ids)
                  .values_list("file_id", flat=True))
    for file_id in file_ids:
        if file_id not in present:
            vector_stores.add_file(store, file_id)
    transaction.on_commit(ingestion.schedule)  # add_file woke the worker before the caller's transaction commits
