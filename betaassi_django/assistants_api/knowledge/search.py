"""Search over vector stores' chunks (first version: a plain word match)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Chunk, File


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    score: float
    attributes: dict | None
    text: str
    chunk_index: int


def search(vector_store_ids: list[str], query: str, *, max_num_results: int = 10, score_threshold: float = 0.0,
           filters: dict | None = None) -> list[Hit]:
    """The chunks of completed files in ``vector_store_ids`` best matching ``query``, best first."""
    words = {w for w in query.lower().split() if w}
    if not words:
        return []
    rows = (Chunk.objects.filter(vector_store_id__in=vector_store_ids, vector_store_file__status="completed")
            .select_related("vector_store_file"))
    scored = []
    for chunk in rows:
        text = chunk.text.lower()
        score = sum(1 for w in words if w in text) / len(words)
        if score > 0 and score >= score_threshold:
            scored.append((score, chunk))
    scored.sort(key=lambda s: (-s[0], s[1].id))
    scored = scored[:max_num_results]
    names = dict(File.objects.filter(id__in={c.file_id for _, c in scored}).values_list("id", "filename"))
    return [Hit(c.file_id, names.get(c.file_id, ""), s, c.vector_store_file.attributes, c.text, c.index)
            for s, c in scored]
