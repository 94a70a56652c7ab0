"""The nearest chunks to a query vector: cosine similarity with numpy, over each store's vectors cached in memory.

Why numpy: pgvector is not installable here (Debian bookworm has no package and its repository is out of reach)
and this Python's ``sqlite3`` cannot load extensions (so no sqlite-vec). ``nearest`` is the one function to
replace with a database query when they are.

Each store's vectors are read once into a normalised float32 matrix, kept per process (the most recently searched
stores, up to ``MAX_CACHE_BYTES``) and keyed by a cheap version, the store's chunk count and largest chunk id:
chunks are only ever added (with their vector) or deleted, and ids only grow, so any change moves the version. A
query then reads two numbers, not 10,000 blobs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.db import connection

from ..models import Chunk

#: The cache's bound: the vectors of the most recently searched stores up to this many bytes (the last one loaded
#: is kept whatever its size). 10,000 chunks of 1,536 dimensions take 61 MB.
MAX_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _Matrix:
    version: tuple
    #: Vector length (in floats) -> (chunk ids, their vector store files' seqs, unit vectors as rows).
    by_size: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def nbytes(self) -> int:
        return sum(ids.nbytes + files.nbytes + matrix.nbytes for ids, files, matrix in self.by_size.values())


_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], _Matrix] = OrderedDict()


def _version(store_id: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*), MAX(id) FROM assistants_api_chunk WHERE vector_store_id = %s", [store_id])
        return tuple(cursor.fetchone())


def _load(store_id: str, version: tuple) -> _Matrix:
    rows = (Chunk.objects.filter(vector_store_id=store_id, embedding__isnull=False)
            .values_list("id", "vector_store_file_id", "embedding").iterator(chunk_size=2000))
    groups: dict[int, tuple[list, list, list]] = {}
    for chunk_id, file_seq, data in rows:
        ids, files, vectors = groups.setdefault(len(data) // 4, ([], [], []))
        ids.append(chunk_id)
        files.append(file_seq)
        vectors.append(bytes(data))
    by_size = {}
    for size, (ids, files, vectors) in groups.items():
        matrix = np.frombuffer(b"".join(vectors), dtype="<f4").reshape(len(vectors), size).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms == 0, 1, norms)
        by_size[size] = (np.array(ids, dtype=np.int64), np.array(files, dtype=np.int64), matrix)
    return _Matrix(version, by_size)


def _matrix(store_id: str) -> _Matrix:
    key = (f"{connection.alias}:{connection.settings_dict['NAME']}", store_id)
    version = _version(store_id)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.version == version:
            _cache.move_to_end(key)
            return cached
    loaded = _load(store_id, version)
    with _lock:
        _cache[key] = loaded
        _cache.move_to_end(key)
        while len(_cache) > 1 and sum(cached.nbytes for cached in _cache.values()) > MAX_CACHE_BYTES:
            _cache.popitem(last=False)
    return loaded


def nearest(vector_store_ids: list[str], query: bytes, limit: int, eligible: list[int]) -> list[tuple[int, float]]:
    """``(chunk id, cosine similarity)`` of the ``limit`` chunks closest to ``query`` (float32 bytes) among those of
    the vector store files ``eligible`` (seqs), best first; chunks pointing away from it (similarity <= 0) left
    out."""
    q = np.frombuffer(query, dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(q))
    if norm == 0 or not eligible or limit <= 0:
        return []
    q /= norm
    allowed = np.array(sorted(set(eligible)), dtype=np.int64)
    found_ids, found_scores = [], []
    for store_id in dict.fromkeys(vector_store_ids):
        group = _matrix(store_id).by_size.get(q.size)
        if group is None:
            continue
        ids, files, matrix = group
        # einsum rather than ``matrix @ q``: BLAS splits a matrix-vector product over its threads, which on a busy
        # host wait for each other (measured 15 ms against 0.5 ms single-threaded at 10,000 x 256).
        scores = np.einsum("ij,j->i", matrix, q)
        mask = np.isin(files, allowed) & (scores > 0)
        found_ids.append(ids[mask])
        found_scores.append(scores[mask])
    if not found_ids:
        return []
    ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
    if ids.size > limit:
        top = np.argpartition(-scores, limit - 1)[:limit]
        ids, scores = ids[top], scores[top]
    order = np.lexsort((ids, -scores))
    return [(int(ids[i]), min(1.0, float(scores[i]))) for i in order]
