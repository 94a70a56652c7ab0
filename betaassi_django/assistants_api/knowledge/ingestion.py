"""Ingestion, off the request: a vector store file ``in_progress`` -> parsed, chunked, indexed -> ``completed``,
or ``failed`` with ``last_error`` (docs/knowledge.md, "Ingestion").

Who does it: a worker thread of the process, started on demand (a file added, any vector store request), never at
import. It takes one file at a time with a lease: ``claimed_at`` is set by a conditional UPDATE that succeeds only
while the file is ``in_progress`` and unclaimed (or its lease is older than ``BETAASSI_INGEST_LEASE_SECONDS``), and
compared with the value read before, so two processes never hold the same file. A second thread renews the lease
while the file is parsed, chunked and embedded (``index.embed_pieces``, when an embeddings model is set). The
result is written with one more conditional UPDATE on the lease: a file cancelled, deleted or retaken meanwhile is
left alone (its chunks rolled back). When idle, the worker looks again every half lease: so files of a process that
died (SIGKILL mid-ingestion) are finished by any live process's worker within 1.5 leases.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from betaassi_django import conf

from ..models import Chunk, File, VectorStoreFile
from . import chunking, index, parsing

logger = logging.getLogger("betaassi_django.knowledge")

INTERNAL = "The file could not be ingested because of an internal server error."
#: Database errors that are not the file's fault (locked, connection lost): the file is tried again later.
TRANSIENT = (OperationalError, InterfaceError)
#: Candidates read per claim attempt (the first one whose conditional UPDATE succeeds is taken).
CANDIDATES = 20


def lease_seconds() -> float:
    return conf.get().ingest_lease_seconds


class Lease:
    """This process's hold on a file: ``token`` is the ``claimed_at`` it last wrote."""

    def __init__(self, pk: int, token: datetime) -> None:
        self.pk, self.token = pk, token
        self.lock = threading.Lock()

    def _held(self):
        return VectorStoreFile.objects.filter(pk=self.pk, status="in_progress", claimed_at=self.token)

    def renew(self) -> bool:
        with self.lock:
            stamp = timezone.now()
            if self._held().update(claimed_at=stamp):
                self.token = stamp
                return True
            return False

    def release(self) -> None:
        with self.lock:
            self._held().update(claimed_at=None)

    def finish(self, **values) -> bool:
        """Write the file's end (``status`` and what goes with it) if the lease still holds."""
        with self.lock:
            return bool(self._held().update(claimed_at=None, **values))


def claim() -> tuple[VectorStoreFile, Lease] | None:
    """Take the oldest file waiting for ingestion (unclaimed, or its lease run out); None when there is none."""
    while True:  # read again while other processes win every candidate read
        cutoff = timezone.now() - timedelta(seconds=lease_seconds())
        waiting = list(VectorStoreFile.objects.filter(status="in_progress")
                       .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=cutoff))
                       .order_by("seq").values_list("pk", "claimed_at")[:CANDIDATES])
        if not waiting:
            return None
        for pk, before in waiting:
            token = timezone.now()
            rows = VectorStoreFile.objects.filter(pk=pk, status="in_progress")
            rows = rows.filter(claimed_at__isnull=True) if before is None else rows.filter(claimed_at=before)
            if rows.update(claimed_at=token):
                found = VectorStoreFile.objects.select_related("vector_store").filter(pk=pk).first()
                if found is not None:
                    return found, Lease(pk, token)


def _renewing(lease: Lease, stop: threading.Event) -> None:
    try:
        while not stop.wait(lease_seconds() / 3):
            if not lease.renew():
                return
    except Exception:
        logger.exception("renewing the ingestion lease of vector store file %s failed", lease.pk)
    finally:
        connection.close()


def pieces_of(vs_file: VectorStoreFile) -> list[tuple[str, int]]:
    """Parse and chunk the file (``ParseError`` when it has no text)."""
    file = File.objects.filter(id=vs_file.file_id).first()
    if file is None:
        raise parsing.ParseError("The file was deleted before it could be ingested.")
    with file.content.open("rb") as stream:
        data = stream.read()
    text = parsing.extract(data, file.filename)
    return chunking.chunk(text, *chunking.static_of(vs_file.chunking_strategy or {}))


def _store(vs_file: VectorStoreFile, lease: Lease, pieces: list[tuple[str, int]], vectors: list[bytes] | None
           ) -> bool:
    """The chunks and ``completed``, in one short transaction (the embeddings were computed before): the file's row
    first (which, on PostgreSQL, also makes a concurrent retake wait for this to end), then any chunks of an earlier
    attempt out, the new ones in."""
    usage = sum(len(text.encode()) for text, _ in pieces)
    with transaction.atomic():
        if not lease.finish(status="completed", usage_bytes=usage, last_error=None):
            return False
        Chunk.objects.filter(vector_store_file_id=vs_file.pk).delete()
        index.add(vs_file, pieces, vectors)
    return True


def delete_files(files: QuerySet[VectorStoreFile]) -> None:
    """Delete vector store files with their chunks, their rows locked first. An ingestion writing a file's chunks
    holds the file's row (``_store``): the deletion then waits for it and deletes the chunks it wrote, instead of
    missing them (PostgreSQL refused such a deletion at commit, for the chunks left pointing at a deleted file)."""
    with transaction.atomic():
        list(files.select_for_update().values_list("pk", flat=True))
        files.delete()


def ingest(vs_file: VectorStoreFile, lease: Lease) -> str:
    """Ingest a claimed file; its end status (``lost``: cancelled, deleted or retaken meanwhile; ``retry``: the
    database failed, the file waits). Never raises for the file's sake: whatever else goes wrong fails the file."""
    stop = threading.Event()
    renewer = threading.Thread(target=_renewing, args=(lease, stop), name="betaassi-ingest-lease", daemon=True)
    renewer.start()
    try:
        pieces = pieces_of(vs_file)
        vectors = index.embed_pieces(pieces)  # the network, while the lease is renewed
    except parsing.ParseError as error:
        pieces, failure = None, {"code": error.code, "message": error.message}
    except index.IndexingError as error:
        pieces, failure = None, {"code": "server_error", "message": error.message}
    except TRANSIENT:
        return _later(vs_file, lease)
    except Exception:
        logger.exception("ingesting vector store file %s failed", vs_file.file_id)
        pieces, failure = None, {"code": "server_error", "message": INTERNAL}
    finally:
        stop.set()
        renewer.join()
    if pieces is not None:
        try:
            return "completed" if _store(vs_file, lease, pieces, vectors) else "lost"
        except index.IndexingError as error:
            failure = {"code": "server_error", "message": error.message}
        except TRANSIENT:
            return _later(vs_file, lease)
        except Exception:
            if not VectorStoreFile.objects.filter(pk=vs_file.pk, status="in_progress").exists():
                return "lost"  # deleted or cancelled while its chunks were written
            logger.exception("indexing vector store file %s failed", vs_file.file_id)
            failure = {"code": "server_error", "message": INTERNAL}
    try:
        return "failed" if lease.finish(status="failed", usage_bytes=0, last_error=failure) else "lost"
    except TRANSIENT:
        return _later(vs_file, lease)


def _later(vs_file: VectorStoreFile, lease: Lease) -> str:
    """The database failed (locked, gone away): not the file's fault, so it stays ``in_progress``, released for
    a later look (or, if even that fails, taken again when its lease runs out)."""
    logger.warning("ingesting vector store file %s: the database failed; trying again later", vs_file.file_id,
                   exc_info=True)
    with contextlib.suppress(TRANSIENT):
        lease.release()
    return "retry"


def run_pending(limit: int | None = None) -> int:
    """Ingest waiting files until there is none (or ``limit``); how many were taken."""
    taken = 0
    while limit is None or taken < limit:
        claimed = claim()
        if claimed is None:
            break
        taken += 1
        if ingest(*claimed) == "retry":
            break  # the database is failing: the worker looks again later
    return taken


# The worker --------------------------------------------------------------------------------------------------

_wake = threading.Event()
_start_lock = threading.Lock()
_worker: threading.Thread | None = None


def _work() -> None:
    while True:
        try:
            run_pending()
        except Exception:  # the database away, a table flushed under it: try again at the next look
            logger.exception("ingestion worker: looking for files failed")
        finally:
            connection.close()  # nothing held while idle
        _wake.wait(lease_seconds() / 2)
        _wake.clear()


def start() -> None:
    """Start this process's worker if it is not running (cheap: every vector store request calls it)."""
    global _worker
    if _worker is not None and _worker.is_alive():
        return
    with _start_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="betaassi-ingest", daemon=True)
            _worker.start()


def schedule() -> None:
    """A file is waiting: start the worker, or wake it (call after the file's row is committed)."""
    start()
    _wake.set()
