"""Uploaded files (``OpenAIFile``): the one place that stores, reads, lists and deletes them.

The API (``file_views``) and the admin both create files through ``create_file``, so a file is checked
(purpose, size, name) and stored the same way whichever door it came in by. The bytes go to the project's
default storage (``File.content``, at a path made of the file's id: never the client's name), so a
deployment may put them on any django-storages backend.

A file with ``expires_at`` in the past is gone at once: ``get_file`` answers 404 and lists leave it out. Its
row and bytes are deleted by ``purge_expired``, which creating and listing files call (a bounded batch each
time), so nothing needs a scheduler.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import unicodedata

from django.core.files import File as DjangoFile
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import QueryDict

from betaassi_django import conf

from ..errors import ApiError, invalid
from ..ids import now
from ..limits import plausible_id
from ..models import File, VectorStoreFile
from ..pagination import page
from . import ingestion

logger = logging.getLogger("betaassi_django.api")

#: The purposes this server serves: files for file_search and message attachments. The specification's others
#: (``batch``, ``fine-tune``, ``vision``, ``evals``) belong to APIs it does not have, so they are a 400.
SUPPORTED_PURPOSES = ("assistants", "user_data")
#: The purposes a file can have in the specification (``OpenAIFile.purpose`` and ``CreateFileRequest.purpose``).
LISTED_PURPOSES = frozenset(("assistants", "assistants_output", "batch", "batch_output", "fine-tune",
                             "fine-tune-results", "vision", "user_data", "evals"))
#: ``filename`` keeps at most this many characters (the column's size).
MAX_FILENAME = 255
#: The longest list ``GET /files`` returns, and its default (the specification's).
MAX_LIST_LIMIT = 10_000
#: Expired files deleted per call of ``purge_expired``.
PURGE_BATCH = 100

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


def not_found(file_id: str) -> ApiError:
    """OpenAI's words for a file id it does not know."""
    return ApiError(404, f"No such File object: {file_id}", param="id", code=None)


def clean_filename(name: str) -> str:
    """The client's name as ``filename`` keeps it: the last path segment, valid Unicode (a lone surrogate
    becomes U+FFFD), no control characters, at most 255 characters (the extension kept); ``file`` when nothing
    is left. Only ever shown: the stored path is the id (``models.file_path``)."""
    name = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    name = unicodedata.normalize("NFC", _CONTROL.sub("", name))
    name = re.split(r"[/\\]", name)[-1].strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > MAX_FILENAME:
        stem, dot, suffix = name.rpartition(".")
        if dot and 0 < len(suffix) <= 16:
            name = stem[: MAX_FILENAME - len(suffix) - 1] + "." + suffix
        else:
            name = name[:MAX_FILENAME]
    return name


def check_purpose(purpose: str) -> None:
    if purpose not in SUPPORTED_PURPOSES:
        raise invalid(
            f"Invalid value for 'purpose': '{purpose[:50]}' is not supported by this server, which serves the "
            f"Assistants API. Supported values are: {', '.join(repr(p) for p in SUPPORTED_PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )


def check_size(size: int) -> None:
    """A 400 naming ``file`` for an empty file or one over ``BETAASSI_FILE_MAX_BYTES``."""
    limit = conf.get().file_max_bytes
    if size <= 0:
        raise invalid("The file is empty: upload a file of at least 1 byte.", param="file", code="empty_file")
    if size > limit:
        raise invalid(f"The file is {size} bytes, more than the {limit} bytes this server accepts.",
                      param="file", code="file_too_large")


def create_file(upload, purpose: str, *, filename: str | None = None, content_type: str = "",
                expires_after_seconds: int | None = None) -> File:
    """Store an upload (a Django ``UploadedFile`` or any ``django.core.files.File``) and return its row.

    Checks the purpose and the size before anything is written; the bytes are written to storage before the
    row, and removed again if the row cannot be saved, so no row ever points at missing bytes.
    """
    check_purpose(purpose)
    check_size(upload.size)
    purge_expired()
    created = now()
    file = File(
        filename=clean_filename(filename if filename is not None else (upload.name or "")),
        purpose=purpose,
        bytes=upload.size,
        created_at=created,
        expires_at=created + expires_after_seconds if expires_after_seconds is not None else None,
        content_type=content_type if _MEDIA_TYPE.fullmatch(content_type or "") else "",
    )
    upload.seek(0)
    file.content.save(file.id, upload if isinstance(upload, DjangoFile) else DjangoFile(upload), save=False)
    try:
        file.save()
    except BaseException:
        file.content.storage.delete(file.content.name)
        raise
    return file


def live_files() -> QuerySet:
    """Files not expired."""
    return File.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now()))


def get_file(file_id: str) -> File:
    """A file by id, or OpenAI's 404 (an expired file is gone)."""
    if not plausible_id(file_id):
        raise not_found(file_id)
    file = live_files().filter(id=file_id).first()
    if file is None:
        raise not_found(file_id)
    return file


def read_bytes(file: File) -> bytes:
    """The file's bytes, from storage."""
    with file.content.storage.open(file.content.name, "rb") as handle:
        return handle.read()


def open_bytes(file: File):
    """The file's bytes as an open binary file (to stream them)."""
    return file.content.storage.open(file.content.name, "rb")


def media_type(file: File) -> str:
    """The Content-Type to serve the bytes with: the one the client sent, else one guessed from the name."""
    return file.content_type or mimetypes.guess_type(file.filename)[0] or "application/octet-stream"


def serialize_file(file: File) -> dict:
    """The ``OpenAIFile`` object (``status`` is always ``processed``: a stored file is ready)."""
    data = {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
    }
    if file.expires_at is not None:
        data["expires_at"] = file.expires_at
    return data


def list_files(query: QueryDict) -> dict:
    """``GET /files``: live files, newest first by default, optionally of one ``purpose``."""
    purge_expired()
    files = live_files()
    purpose = query.get("purpose")
    if purpose:
        # Any other value (a NUL, a lone surrogate: no database could even compare it) matches no file.
        files = files.filter(purpose=purpose) if purpose in LISTED_PURPOSES else files.none()
    return page(files, query, serialize_file, default_limit=MAX_LIST_LIMIT, max_limit=MAX_LIST_LIMIT)


def delete_file(file: File) -> None:
    """Delete a file and take it out of every vector store (their chunks go with it); its bytes leave storage
    once the deletion is committed."""
    name, storage = file.content.name, file.content.storage
    with transaction.atomic():
        ingestion.delete_files(VectorStoreFile.objects.filter(file_id=file.id))
        File.objects.filter(pk=file.pk).delete()
        transaction.on_commit(lambda: _delete_bytes(storage, name))


def _delete_bytes(storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:  # the row is gone: leftover bytes are unreachable, not an error for the client
        logger.exception("could not delete the bytes of a deleted file at %s", name)


def purge_expired(limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` expired files (rows and bytes); returns how many."""
    expired = list(File.objects.filter(expires_at__lte=now()).order_by("expires_at")[:limit])
    for file in expired:
        delete_file(file)
    return len(expired)
