"""The registry threads' layout: their types, how many keys each holds, values chunked over keys, short ids.

The numbers every part of the registry is sized by (a head holds 14 keys of sessions, an overflow page 15, the
root 13 of bucket ids), kept in one place so the pages, the root and the checks of what fits agree.
"""

from __future__ import annotations

from betaassi_django.metadata import MAX_VALUE_LENGTH, chunk_keys

ROOT_TYPE = "betaassi.registry"
PAGE_TYPE = "betaassi.registry_page"
OVERFLOW_TYPE = "betaassi.registry_overflow"
PAGE_VALUE_KEYS = 14  # sessions or more (+ applied and betaassi_type)
OVERFLOW_VALUE_KEYS = 15  # sessions (+ betaassi_type)
ROOT_PAGE_KEYS = 13  # pages, pages.1 ... pages.12 (+ hwm, key and betaassi_type)
PAGE_CAPACITY_CHARS = PAGE_VALUE_KEYS * MAX_VALUE_LENGTH
OVERFLOW_CAPACITY_CHARS = OVERFLOW_VALUE_KEYS * MAX_VALUE_LENGTH
#: A run rewritten in place carries ``applied`` too, so it holds one key of sessions less.
IN_PLACE_CAPACITY_CHARS = (OVERFLOW_VALUE_KEYS - 1) * MAX_VALUE_LENGTH
#: Characters a directory entry's thread id may take (a 64-character id, quoted): the check is conservative.
DIRECTORY_ID_CHARS = 2 + 64


class RegistryFull(Exception):
    """The layout cannot hold this (more buckets than the root holds, a bucket directory past its keys)."""


def join_chunks(metadata: dict[str, str], name: str) -> str:
    """A value chunked over ``name``, ``name.1``... joined again."""
    text, index = metadata.get(name, ""), 1
    while f"{name}.{index}" in metadata:
        text += metadata[f"{name}.{index}"]
        index += 1
    return text


def split_chunks(name: str, text: str, max_keys: int) -> dict[str, str]:
    """``text`` chunked over ``name``, ``name.1``... (``RegistryFull`` past ``max_keys`` keys)."""
    pieces = [text[i : i + MAX_VALUE_LENGTH] for i in range(0, len(text), MAX_VALUE_LENGTH)] or [""]
    if len(pieces) > max_keys:
        raise RegistryFull(f"{name} needs {len(pieces)} keys; {max_keys} fit")
    return dict(zip(chunk_keys(name, len(pieces)), pieces, strict=True))


THREAD_PREFIX = "thread_"


def short_thread(thread_id: str) -> str:
    """A thread id without its usual prefix, as the directories store it (a few characters saved per id)."""
    return thread_id.removeprefix(THREAD_PREFIX)


def long_thread(short: str) -> str:
    """A stored id as a thread id again (an id stored whole, one with an underscore, is kept as it is)."""
    return short if "_" in short else THREAD_PREFIX + short
