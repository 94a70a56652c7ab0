"""Search over vector stores: keyword ranking in the database, fused with vector similarity when an embeddings
model is set (docs/knowledge.md, "Search").

- Keyword only (the default, offline): the database's own full-text ranking (``keyword``), scores in [0, 1).
- Hybrid (``BETAASSI_EMBEDDINGS_MODEL`` set): the keyword list and the vector list (``vectors``, cosine) are
  fused by reciprocal rank fusion, ``sum(1 / (RRF_K + rank))`` over the lists that found anything, divided by its
  largest possible value, so a chunk first in every list scores 1.0. If the query cannot be embedded (the endpoint
  fails), the search is keyword only rather than an error.

Only chunks of ``completed`` files in the given stores are searched; ``filters`` choose files by attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..models import Chunk, File, VectorStoreFile
from . import embeddings, keyword, vectors
from .filters import matches
from .index import clean

logger = logging.getLogger("betaassi_django.api")

#: Reciprocal rank fusion's constant (Cormack et al. 2009: 60; the hybrid search of OpenAI and most engines).
RRF_K = 60
#: How deep each list is read before fusing (at least the results asked for).
CANDIDATES = 50


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    score: float
    attributes: dict | None
    text: str
    chunk_index: int


def _eligible(vector_store_ids: list[str], filters: dict | None) -> list[int]:
    """The seqs of the completed files of these stores that pass ``filters``."""
    files = VectorStoreFile.objects.filter(vector_store__id__in=vector_store_ids, status="completed")
    if filters is None:
        return list(files.values_list("seq", flat=True))
    return [seq for seq, attributes in files.values_list("seq", "attributes")
            if matches(filters, attributes)]


def fuse(*rankings: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of best-first ``(id, score)`` lists, normalised to [0, 1] (see the module)."""
    lists = [ranking for ranking in rankings if ranking]
    if not lists:
        return []
    fused: dict[int, float] = {}
    for ranking in lists:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    best = len(lists) / (RRF_K + 1)
    return sorted(((chunk_id, min(1.0, total / best)) for chunk_id, total in fused.items()),
                  key=lambda item: (-item[1], item[0]))


def _query_vector(query: str) -> bytes | None:
    if not embeddings.enabled() or not query.strip():
        return None
    try:
        return embeddings.embed([clean(query)[:8000]])[0]
    except embeddings.EmbeddingsError as error:
        logger.warning("search falls back to keywords only: %s", error)
        return None


def ranked(vector_store_ids: list[str], query: str, *, limit: int, filters: dict | None = None
           ) -> list[tuple[int, float]]:
    """``(chunk id, score)``, best first, at most ``limit``."""
    vector_store_ids = list(dict.fromkeys(vector_store_ids))
    query_vector = _query_vector(query)
    if query_vector is None:
        eligible = None if filters is None else _eligible(vector_store_ids, filters)
        return keyword.ranked(vector_store_ids, query, limit, eligible)
    eligible = _eligible(vector_store_ids, filters)
    depth = max(limit, CANDIDATES)
    words = keyword.ranked(vector_store_ids, query, depth, eligible if filters is not None else None)
    nearest = vectors.nearest(vector_store_ids, query_vector, depth, eligible)
    return fuse(words, nearest)[:limit]


def search(vector_store_ids: list[str], query: str, *, max_num_results: int = 10, score_threshold: float = 0.0,
           filters: dict | None = None) -> list[Hit]:
    """The chunks of completed files in ``vector_store_ids`` that best match ``query``, best first, each with a
    score in [0, 1] of at least ``score_threshold``; ``filters``: the specification's attribute filter."""
    found = [(chunk_id, score) for chunk_id, score in
             ranked(vector_store_ids, query, limit=max_num_results, filters=filters) if score >= score_threshold]
    if not found:
        return []
    chunks = {chunk.id: chunk for chunk in Chunk.objects.filter(id__in=[chunk_id for chunk_id, _ in found])
              .select_related("vector_store_file").only("id", "index", "text", "file_id",
                                                        "vector_store_file__attributes")}
    names = dict(File.objects.filter(id__in={chunk.file_id for chunk in chunks.values()})
                 .values_list("id", "filename"))
    return [Hit(chunk.file_id, names.get(chunk.file_id, ""), score, chunk.vector_store_file.attributes,
                chunk.text, chunk.index)
            for chunk_id, score in found if (chunk := chunks.get(chunk_id)) is not None]

