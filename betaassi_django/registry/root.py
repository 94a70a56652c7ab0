"""The registry's root and its hash table: which bucket a session lives in, and when the buckets double.

The root is the one thread a switch of layout writes (the bucket ids, the secret hash key, ``hwm``), so growing
the table is: new buckets written first, then the root, then the old threads deleted (``double``).
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from dataclasses import dataclass, field

from betaassi_django.metadata import MAX_VALUE_LENGTH, TYPE_KEY

from .layout import (
    PAGE_CAPACITY_CHARS,
    ROOT_PAGE_KEYS,
    ROOT_TYPE,
    THREAD_PREFIX,
    RegistryFull,
    join_chunks,
    long_thread,
    short_thread,
    split_chunks,
)
from .pages import Page


def new_key() -> str:
    """A registry's secret hash key."""
    return secrets.token_hex(16)


def bucket_hash(session_id: str, key: str = "") -> int:
    """The keyed 64-bit hash of a session id (``crc32`` for a registry of the old layout, without a key)."""
    data = session_id.encode("utf-8", "surrogatepass")
    if not key:
        return zlib.crc32(data)
    return int.from_bytes(hashlib.blake2b(data, key=bytes.fromhex(key), digest_size=8).digest(), "big")


@dataclass
class Root:
    """The root: the high water mark, the hash key and the bucket directory."""

    thread_id: str
    page_ids: list[str] = field(default_factory=list)
    hwm: str = ""
    key: str = ""

    @classmethod
    def from_metadata(cls, thread_id: str, metadata: dict[str, str]) -> Root:
        pages = join_chunks(metadata, "pages")
        key = metadata.get("key", "")
        if key and (len(key) != 32 or any(c not in "0123456789abcdef" for c in key)):
            raise ValueError(f"registry {thread_id} has a malformed key")
        page_ids = [long_thread(p) for p in pages.split(",")] if pages else []
        return cls(thread_id, page_ids, metadata.get("hwm", ""), key)

    def to_metadata(self) -> dict[str, str]:
        directory = ",".join(short_thread(p) for p in self.page_ids)
        keyed = {"key": self.key} if self.key else {}
        return {TYPE_KEY: ROOT_TYPE, "hwm": self.hwm, **keyed, **split_chunks("pages", directory, ROOT_PAGE_KEYS)}

    def bucket(self, session_id: str) -> int:
        return bucket_hash(session_id, self.key) % len(self.page_ids)

    def can_double(self, id_length: int = len(THREAD_PREFIX) + 24) -> bool:
        """Whether twice as many page ids still fit in the root's keys."""
        return self.can_hold(2 * len(self.page_ids), id_length)

    def can_hold(self, count: int, id_length: int = len(THREAD_PREFIX) + 24) -> bool:
        """Whether ``count`` page ids fit in the root's keys."""
        return count * (id_length - len(THREAD_PREFIX) + 1) <= ROOT_PAGE_KEYS * MAX_VALUE_LENGTH


#: Double the buckets once the table is this full, so buckets rarely need overflow pages.
TARGET_LOAD = 0.6


def needs_growth(root: Root, pages: list[Page], touched: Page | None = None) -> bool:
    """The table is past its target load and the root can still hold twice as many buckets.

    A bucket that does not fit its head is not a reason: colliding ids would land together again
    (under the same key), so it spills into overflow pages instead.
    """
    if not root.can_double():
        return False
    return sum(p.chars() for p in pages) > TARGET_LOAD * PAGE_CAPACITY_CHARS * len(pages)


def growth_factor(root: Root, pages: list[Page]) -> int:
    """How many times as many buckets bring the table under its target load (a power of two, as far as the
    root holds; 1: no growth). A backlog applied in one batch may need more than one doubling."""
    factor, total = 1, sum(p.chars() for p in pages)
    while (total > TARGET_LOAD * PAGE_CAPACITY_CHARS * len(pages) * factor
           and root.can_hold(2 * factor * len(root.page_ids))):
        factor *= 2
    return factor


def double(root: Root, pages: list[Page], make_page, factor: int = 2) -> list[Page]:
    """``factor`` times as many buckets, all new, with every session where its id now hashes.

    A root without a key gets one (``factor=1`` only rehashes: the old layout's migration). The old
    pages are left as they are: the caller writes the new ones, then the root (the switch to the new
    directory is that one write), then deletes the old threads. A crash before the root write leaves
    the old layout whole.
    """
    if factor > 1 and not root.can_hold(factor * len(root.page_ids)):
        raise RegistryFull(f"the root holds {len(root.page_ids)} pages; {factor} times as many do not fit")
    root.key = root.key or new_key()
    fresh = [make_page() for _ in range(factor * len(pages))]
    root.page_ids = [page.thread_id for page in fresh]
    for page in pages:
        for session_id, record in page.sessions.items():
            fresh[root.bucket(session_id)].put(session_id, record)
    return fresh


def put(root: Root, pages: list[Page], session_id: str, record: dict, make_page) -> bool:
    """Store a record; True when the pages doubled (every page changed)."""
    pages[root.bucket(session_id)].put(session_id, record)
    if not needs_growth(root, pages):
        return False
    pages[:] = double(root, pages, make_page)
    return True
