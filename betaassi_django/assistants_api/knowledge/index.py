"""Writing a vector store file's chunks: the ``Chunk`` rows, with their vectors when an embeddings model is set.

The keyword index follows the rows by itself (migration ``0005_search_index``: FTS5 triggers on SQLite, a
generated ``tsvector`` column on PostgreSQL), so inserting or deleting chunks, directly or by a cascade from
their file or store, is all there is to do.
"""

from __future__ import annotations

from ..models import Chunk, VectorStoreFile
from . import embeddings


class IndexingError(Exception):
    """A failure that should fail the file (its message becomes the file's ``last_error``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean(text: str) -> str:
    """Text any database keeps: no NUL (PostgreSQL refuses it), no lone surrogate (not encodable)."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def embed_pieces(pieces: list[tuple[str, int]]) -> list[bytes] | None:
    """The pieces' vectors (None when no embeddings model is set). Slow (the network): call it outside a
    transaction and pass the result to ``add``. Raises ``IndexingError`` when the endpoint fails."""
    if not embeddings.enabled() or not pieces:
        return None
    try:
        return embeddings.embed([clean(text) for text, _ in pieces], [tokens for _, tokens in pieces])
    except embeddings.EmbeddingsError as error:
        raise IndexingError(str(error)) from error


def add(vs_file: VectorStoreFile, pieces: list[tuple[str, int]], vectors: list[bytes] | None = None) -> None:
    """Store ``pieces`` (each chunk's text and token count, in order) as the file's chunks, with ``vectors`` (from
    ``embed_pieces``; computed here when not given and a model is set)."""
    if vectors is None:
        vectors = embed_pieces(pieces)
    if vectors is not None and len(vectors) != len(pieces):
        raise IndexingError(f"{len(vectors)} vectors were given for {len(pieces)} chunks.")
    store_id = vs_file.vector_store.id
    Chunk.objects.bulk_create(
        [Chunk(vector_store_file=vs_file, vector_store_id=store_id, file_id=vs_file.file_id, index=i,
               text=clean(text), tokens=tokens, embedding=None if vectors is None else vectors[i])
         for i, (text, tokens) in enumerate(pieces)],
        batch_size=500)
