"""The specification's ``static`` chunking, in tokens of OpenAI's tokenizer (``tokens``).

A text of ``n`` tokens gives windows of ``max_chunk_size_tokens`` tokens starting every ``max - overlap`` tokens,
until a window reaches the end: chunk ``i`` holds tokens ``[i*step, min(i*step + max, n))``. ``auto`` is
800/400. A window's edge may fall inside a character that spans several tokens (some emoji, rare CJK); that
character's partial bytes are left out of the chunk's text (the token count stays the window's).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator

from .. import tokens

#: Characters of text encoded at once (see ``_segments``).
SEGMENT_CHARS = 1 << 20
_CUT = re.compile(r"\n(?=[^\s/])")


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


def _segments(text: str) -> Iterator[str]:
    """The text in pieces of about ``SEGMENT_CHARS``, each cut just after a newline that a character other than
    white space or ``/`` follows: the tokenizer's own pre-split cuts there too, so the pieces' tokens, one after
    the other, are the whole text's (a text without such a newline is one piece)."""
    start = 0
    while len(text) - start > SEGMENT_CHARS:
        found = _CUT.search(text, start + SEGMENT_CHARS)
        if found is None:
            break
        yield text[start:found.end()]
        start = found.end()
    yield text[start:]


def encode(text: str) -> array:
    """The text's tokens, 4 bytes each (a Python list of a 64 MiB file's tokens would take over half a
    gigabyte)."""
    ids = array("I")
    for segment in _segments(text):
        ids.extend(tokens.encode(segment))
    return ids


def chunk(text: str, size: int = 800, overlap: int = 400) -> list[tuple[str, int]]:
    """Each chunk's text and token count, in order."""
    encoding = tokens.encoding()
    ids = encode(text)
    pieces = []
    for start, end in windows(len(ids), size, overlap):
        piece = encoding.decode_bytes(ids[start:end].tolist()).decode("utf-8", errors="ignore")
        pieces.append((piece, end - start))
    return pieces


def static_of(strategy: dict) -> tuple[int, int]:
    """A stored chunking strategy's size and overlap (``other`` and anything unknown: ``auto``)."""
    static = strategy.get("static") if strategy.get("type") == "static" else None
    if not static:
        return 800, 400
    return static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]
