"""Vector stores, their files and file batches: the store operations behind ``store_views`` (docs/knowledge.md).

A store's ``file_counts``, ``usage_bytes`` and ``status`` are not kept on its row: they are counted from its files
when it is read (one grouped query for a whole page of stores), so that ingestion, which changes only a file's row,
can never leave them out of date. ``usage_bytes`` is the UTF-8 size of the text of the chunks stored for the
store's files (what search reads; overlapping chunks count their shared text twice).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum

from ..errors import ApiError, invalid, not_found
from ..ids import now
from ..limits import plausible_id
from ..models import VectorStore, VectorStoreFile, VectorStoreFileBatch
from . import ingestion
from .files import live_files

DAY = 86400
STATUSES = ("in_progress", "completed", "failed", "cancelled")
#: ``auto`` chunking, as the specification defines it.
AUTO = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
STORE = ("id", "object", "created_at", "name", "usage_bytes", "file_counts", "status", "expires_after", "expires_at",
         "last_active_at", "metadata")


def no_file(file_id: str, param: str | None = None) -> ApiError:
    """A file id in a body that names no File (the wording of ``files.get_file``)."""
    return ApiError(404, f"No such File object: {file_id}", param=param)


def chunking(strategy: dict | None, param: str = "chunking_strategy") -> dict:
    """A request's chunking strategy (already valid against the specification's schema) -> the stored
    ``{"type": "static", "static": {...}}`` (``auto`` and none are 800/400); the overlap must be at most half the
    chunk size."""
    if not strategy or strategy.get("type") == "auto":
        return {"type": "static", "static": dict(AUTO)}
    static = strategy["static"]
    size, overlap = static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]
    if overlap < 0:
        raise invalid(f"Invalid '{param}.static.chunk_overlap_tokens': integer below minimum value. Expected a "
                      f"value >= 0, but got {overlap} instead.", param=f"{param}.static.chunk_overlap_tokens",
                      code="integer_below_min_value")
    if overlap * 2 > size:
        raise invalid(f"Invalid '{param}.static.chunk_overlap_tokens': chunk_overlap_tokens ({overlap}) must not "
                      f"exceed half of max_chunk_size_tokens ({size}).",
                      param=f"{param}.static.chunk_overlap_tokens", code="invalid_value")
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def _expiry(expires_after: dict | None, anchor: int | None) -> int | None:
    return None if not expires_after or anchor is None else anchor + expires_after["days"] * DAY


def is_expired(store: VectorStore) -> bool:
    return store.expires_at is not None and store.expires_at < now()


def first_expired(store_ids: list[str]) -> str | None:
    """The id of one of these stores that has expired (``is_expired``, in one query), or None."""
    return VectorStore.objects.filter(id__in=store_ids, expires_at__lt=now()).values_list("id", flat=True).first()


def expired(store: VectorStore) -> ApiError:
    return invalid(f"Vector store '{store.id}' has expired: it takes no more files.", param="vector_store_id",
                   code="vector_store_expired")


# Stores --------------------------------------------------------------------------------------------------------


def get_store(store_id: str) -> VectorStore:
    if not plausible_id(store_id):
        raise not_found("vector store", store_id)
    try:
        return VectorStore.objects.get(id=store_id)
    except VectorStore.DoesNotExist:
        raise not_found("vector store", store_id) from None


def create_store(body: dict) -> VectorStore:
    """A new store from a validated ``CreateVectorStoreRequest`` body, with its ``file_ids`` added (each scheduled
    for ingestion); an unknown or repeated file id refuses the whole request, nothing written."""
    strategy = chunking(body.get("chunking_strategy"))
    file_ids = body.get("file_ids") or []
    _check_files(file_ids, [f"file_ids[{i}]" for i in range(len(file_ids))])
    stamp = now()
    with transaction.atomic():
        store = VectorStore.objects.create(
            name=body.get("name"), metadata=body.get("metadata") or {}, expires_after=body.get("expires_after"),
            last_active_at=stamp, expires_at=_expiry(body.get("expires_after"), stamp))
        VectorStoreFile.objects.bulk_create(
            [VectorStoreFile(vector_store=store, file_id=file_id, chunking_strategy=strategy)
             for file_id in file_ids])
    if file_ids:
        transaction.on_commit(ingestion.schedule)
    return store


def modify_store(store_id: str, body: dict) -> VectorStore:
    with transaction.atomic():
        store = get_store(store_id)
        if "name" in body:
            store.name = body["name"]
        if "metadata" in body:
            store.metadata = body["metadata"] or {}
        if "expires_after" in body:
            store.expires_after = body["expires_after"]
            store.expires_at = _expiry(store.expires_after, store.last_active_at or now())
        store.save()
    return store


def delete_store(store_id: str) -> dict:
    """The store, its files' membership, batches and chunks (the Files themselves stay)."""
    store = get_store(store_id)
    with transaction.atomic():
        ingestion.delete_files(VectorStoreFile.objects.filter(vector_store=store))
        store.delete()
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


def touch(store_ids: list[str]) -> None:
    """A search or a run used these stores: ``last_active_at`` is now, and a store with ``expires_after`` expires
    that many days later (an already expired store stays expired). This process's ingestion worker is started
    too, if it is not running: files left by a process that died get taken up wherever stores are used."""
    ingestion.start()
    stamp = now()
    live = VectorStore.objects.filter(id__in=list(store_ids)).filter(Q(expires_at__isnull=True)
                                                                      | Q(expires_at__gte=stamp))
    for store in live.exclude(expires_after__isnull=True).only("seq", "expires_after"):
        VectorStore.objects.filter(pk=store.pk).update(last_active_at=stamp,
                                                       expires_at=_expiry(store.expires_after, stamp))
    live.filter(expires_after__isnull=True).update(last_active_at=stamp)


def _tallies(files, key: str) -> dict:
    """Per ``key`` (a store's or a batch's primary key): the file counts by status, and the usage in bytes."""
    rows = files.values(key).annotate(
        usage=Sum("usage_bytes"), total=Count("seq"),
        **{status: Count("seq", filter=Q(status=status)) for status in STATUSES})
    return {row[key]: row for row in rows}


def _counts(row: dict | None) -> dict:
    row = row or {}
    return {**{status: row.get(status, 0) for status in STATUSES}, "total": row.get("total", 0)}


def serialize_stores(stores: list[VectorStore]) -> list[dict]:
    tallies = _tallies(VectorStoreFile.objects.filter(vector_store__in=[s.pk for s in stores]), "vector_store")
    result = []
    for store in stores:
        tally = tallies.get(store.pk)
        counts = _counts(tally)
        status = "expired" if is_expired(store) else "in_progress" if counts["in_progress"] else "completed"
        given = {"object": "vector_store", "usage_bytes": (tally or {}).get("usage") or 0, "file_counts": counts,
                 "status": status}
        fields = {name: given[name] if name in given else getattr(store, name) for name in STORE}
        # The specification types ``name`` as a string (never null) and has no null ``expires_after``.
        fields["name"] = fields["name"] or ""
        if fields["expires_after"] is None:
            del fields["expires_after"]
        result.append(fields)
    return result


def serialize_store(store: VectorStore) -> dict:
    return serialize_stores([store])[0]


# Files ---------------------------------------------------------------------------------------------------------


def _check_files(file_ids: list[str], params: list[str]) -> None:
    """Every id names a File, once (one query); a refusal names the param of the id (``params[i]``)."""
    seen = set()
    for file_id, param in zip(file_ids, params, strict=True):
        if file_id in seen:
            raise invalid(f"Invalid '{param}': file '{file_id}' is listed twice.", param=param, code="duplicate_file")
        seen.add(file_id)
    known = set(live_files().filter(id__in=[f for f in seen if plausible_id(f)]).values_list("id", flat=True))
    for file_id, param in zip(file_ids, params, strict=True):
        if file_id not in known:
            raise no_file(file_id, param)


def add_file(store: VectorStore, file_id: str, *, chunking_strategy: dict | None = None,
             attributes: dict | None = None, batch: VectorStoreFileBatch | None = None,
             param: str = "file_id") -> VectorStoreFile:
    """Add an existing File to the store (``in_progress``) and schedule its ingestion. A file already in the store
    is a 400, an unknown one a 404 (both naming ``param``)."""
    if not plausible_id(file_id) or not live_files().filter(id=file_id).exists():
        raise no_file(file_id, param)
    if is_expired(store):
        raise expired(store)
    strategy = chunking(chunking_strategy, param.rpartition("file_id")[0] + "chunking_strategy")
    try:
        with transaction.atomic():
            vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=file_id, batch=batch,
                                                     chunking_strategy=strategy, attributes=attributes)
    except IntegrityError:
        raise invalid(f"File '{file_id}' is already in vector store '{store.id}'.", param=param,
                      code="duplicate_file") from None
    transaction.on_commit(ingestion.schedule)
    return vs_file


def _in_store(store_id: str, model, kind: str, **lookup):
    """The store's file or batch matching ``lookup`` (one id), with the store attached; OpenAI's 404 naming the
    store's or the object's id otherwise."""
    store = get_store(store_id)
    (object_id,) = lookup.values()
    found = model.objects.filter(vector_store=store, **lookup).first() if plausible_id(object_id) else None
    if found is None:
        raise not_found(kind, object_id)
    found.vector_store = store
    return found


def get_store_file(store_id: str, file_id: str) -> VectorStoreFile:
    return _in_store(store_id, VectorStoreFile, "file", file_id=file_id)


def update_attributes(store_id: str, file_id: str, attributes: dict | None) -> VectorStoreFile:
    vs_file = get_store_file(store_id, file_id)
    vs_file.attributes = attributes
    vs_file.save(update_fields=["attributes"])
    return vs_file


def delete_store_file(store_id: str, file_id: str) -> dict:
    """The file leaves the store with its chunks (the File stays); its ingestion, if running, finds it gone."""
    ingestion.delete_files(VectorStoreFile.objects.filter(pk=get_store_file(store_id, file_id).pk))
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


def serialize_file(vs_file: VectorStoreFile) -> dict:
    return {"id": vs_file.file_id, "object": "vector_store.file", "usage_bytes": vs_file.usage_bytes,
            "created_at": vs_file.created_at, "vector_store_id": vs_file.vector_store.id, "status": vs_file.status,
            "last_error": vs_file.last_error, "chunking_strategy": vs_file.chunking_strategy or {"type": "other"},
            "attributes": vs_file.attributes}


def store_files(files, status: str | None):
    """A queryset of a store's (or a batch's) files as ``pagination.page`` reads it (``id`` is the file id),
    narrowed to a status (the ``filter`` query parameter)."""
    if status is not None and status not in STATUSES:
        raise invalid(f"Invalid value for 'filter': '{status[:50]}'. Supported values are: "
                      "'in_progress', 'completed', 'failed' and 'cancelled'.", param="filter", code="invalid_value")
    files = files.select_related("vector_store").annotate(id=F("file_id"))
    return files if status is None else files.filter(status=status)


# Batches -------------------------------------------------------------------------------------------------------


def create_batch(store_id: str, body: dict) -> VectorStoreFileBatch:
    """A batch of files (``file_ids`` with the shared ``attributes``/``chunking_strategy``, or ``files`` each with
    its own), all added at once (a few queries for up to 2000 files) or none."""
    store = get_store(store_id)
    if "file_ids" in body and "files" in body:
        raise invalid("'file_ids' and 'files' are mutually exclusive: pass one of them.", param="files")
    if is_expired(store):
        raise expired(store)
    if "files" in body:
        entries = [(f"files[{i}].file_id", f"files[{i}].chunking_strategy", f) for i, f in enumerate(body["files"])]
    else:
        shared = {k: body[k] for k in ("attributes", "chunking_strategy") if k in body}
        entries = [(f"file_ids[{i}]", "chunking_strategy", {"file_id": file_id, **shared})
                   for i, file_id in enumerate(body["file_ids"])]
    file_ids = [entry["file_id"] for _, _, entry in entries]
    _check_files(file_ids, [param for param, _, _ in entries])
    strategies = [chunking(entry.get("chunking_strategy"), param) for _, param, entry in entries]
    present = set(VectorStoreFile.objects.filter(vector_store=store, file_id__in=file_ids)
                  .values_list("file_id", flat=True))
    for param, _, entry in entries:
        if entry["file_id"] in present:
            raise invalid(f"File '{entry['file_id']}' is already in vector store '{store.id}'.", param=param,
                          code="duplicate_file")
    try:
        with transaction.atomic():
            batch = VectorStoreFileBatch.objects.create(vector_store=store)
            VectorStoreFile.objects.bulk_create(
                [VectorStoreFile(vector_store=store, file_id=entry["file_id"], batch=batch, chunking_strategy=strategy,
                                 attributes=entry.get("attributes"))
                 for (_, _, entry), strategy in zip(entries, strategies, strict=True)], batch_size=500)
    except IntegrityError:  # added by another request meanwhile
        raise invalid(f"A file of this batch was added to vector store '{store.id}' meanwhile; nothing was added.",
                      code="duplicate_file") from None
    transaction.on_commit(ingestion.schedule)
    batch.vector_store = store
    return batch


def get_batch(store_id: str, batch_id: str) -> VectorStoreFileBatch:
    return _in_store(store_id, VectorStoreFileBatch, "vector store file batch", id=batch_id)


def cancel_batch(store_id: str, batch_id: str) -> VectorStoreFileBatch:
    """Files still in progress become ``cancelled`` (ingestion drops them), and the batch ``cancelled``; a batch
    already finished is a 400."""
    with transaction.atomic():
        batch = get_batch(store_id, batch_id)
        status = serialize_batch(batch)["status"]
        if status != "in_progress":
            raise invalid(f"Cannot cancel a vector store file batch whose status is '{status}'.", param="batch_id")
        batch.files.filter(status="in_progress").update(status="cancelled", claimed_at=None)
        batch.status = "cancelled"
        batch.save(update_fields=["status"])
    return batch


def serialize_batch(batch: VectorStoreFileBatch) -> dict:
    """Its status: ``cancelled`` once cancelled; otherwise ``in_progress`` while a file is, then ``completed``
    (``failed`` when every file failed)."""
    counts = _counts(_tallies(batch.files.all(), "batch").get(batch.pk))
    if batch.status == "cancelled":
        status = "cancelled"
    elif counts["in_progress"]:
        status = "in_progress"
    else:
        status = "failed" if counts["total"] and counts["failed"] == counts["total"] else "completed"
    return {"id": batch.id, "object": "vector_store.files_batch", "created_at": batch.created_at,
            "vector_store_id": batch.vector_store.id, "status": status, "file_counts": counts}
