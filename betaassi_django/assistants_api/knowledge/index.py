"""Writing a vector store file's chunks: the ``Chunk`` rows (the keyword index follows them by itself)."""

from __future__ import annotations

from ..models import Chunk, VectorStoreFile


class IndexingError(Exception):
    """A failure that should fail the file (its message becomes the file's ``last_error``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def add(vs_file: VectorStoreFile, pieces: list[tuple[str, int]]) -> None:
    """Store ``pieces`` (each chunk's text and token count, in order) as the file's chunks."""
    Chunk.objects.bulk_create(
        [Chunk(vector_store_file=vs_file, vector_store_id=vs_file.vector_store.id, file_id=vs_file.file_id,
               index=i, text=text, tokens=tokens) for i, (text, tokens) in enumerate(pieces)],
        batch_size=500)
