"""The specification's ``static`` chunking, in tokens of OpenAI's tokenizer (``tokens``).

A text of ``n`` tokens gives windows of ``max_chunk_size_tokens`` tokens starting every ``max - overlap`` tokens,
until a window reaches the end: chunk ``i`` holds tokens ``[i*step, min(i*step + max, n))``. ``auto`` is
800/400. A window's edge may fall inside a character that spans several tokens (some emoji, rare CJK); that
character's partial bytes are left out of the chunk's text (the token count stays the window's).
"""

from __future__ import annotations

from .. import tokens


def windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of the chunks of a text of ``n`` tokens."""
    step = size - overlap
    ranges, start = [], 0
    while start < n:
        end = min(start + size, n)
        ranges.append((start, end))
        if end == n:
            break
        start += step
    return ranges


def chunk(text: str, size: int = 800, overlap: int = 400) -> list[tuple[str, int]]:
    """Each chunk's text and token count, in order."""
    encoding = tokens.encoding()
    ids = tokens.encode(text)
    pieces = []
    for start, end in windows(len(ids), size, overlap):
        piece = encoding.decode_bytes(ids[start:end]).decode("utf-8", errors="ignore")
        pieces.append((piece, end - start))
    return pieces


def static_of(strategy: dict) -> tuple[int, int]:
    """A stored chunking strategy's size and overlap (``other`` and anything unknown: ``auto``)."""
    static = strategy.get("static") if strategy.get("type") == "static" else None
    if not static:
        return 800, 400
    return static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]
