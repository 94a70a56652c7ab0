"""The session registry, kept in backend metadata beyond the assistant's own 16 keys.

Layout (all in metadata, readable by any process):

- the assistant's ``betaassi_registry`` key names the registry's *root* thread;
- the root thread holds ``hwm`` (the last event applied) and ``pages`` (the
  page threads' ids, comma-separated, chunked over ``pages``, ``pages.1``...);
- each *page* thread holds ``applied`` (the last event applied to it) and
  ``sessions``: a JSON object ``{session_id: record}`` chunked over
  ``sessions``, ``sessions.1``... (14 keys, about 80 sessions).

A session lives in page ``crc32(session_id) % len(pages)``. The number of pages
doubles (every session is rehashed into new page threads, switched to in one
root write) when the table passes 60% full or a page overflows, so pages stay
evenly filled, a small registry has few pages (a batch of events touches few),
and 256 pages hold over 10,000 sessions while finding one session costs two
reads (root, page).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

from betaassi_django.metadata import MAX_VALUE_LENGTH, TYPE_KEY, chunk_keys

ROOT_TYPE = "betaassi.registry"
PAGE_TYPE = "betaassi.registry_page"
PAGE_VALUE_KEYS = 14  # sessions, sessions.1 ... sessions.13 (+ applied and betaassi_type)
ROOT_PAGE_KEYS = 14  # pages, pages.1 ... pages.13 (+ hwm and betaassi_type)
PAGE_CAPACITY_CHARS = PAGE_VALUE_KEYS * MAX_VALUE_LENGTH


class RegistryFull(Exception):
    """No more pages fit in the root thread."""


def _join(metadata: dict[str, str], name: str) -> str:
    text, index = metadata.get(name, ""), 1
    while f"{name}.{index}" in metadata:
        text += metadata[f"{name}.{index}"]
        index += 1
    return text


def _split(name: str, text: str, max_keys: int) -> dict[str, str]:
    pieces = [text[i : i + MAX_VALUE_LENGTH] for i in range(0, len(text), MAX_VALUE_LENGTH)] or [""]
    if len(pieces) > max_keys:
        raise RegistryFull(f"{name} needs {len(pieces)} keys; {max_keys} fit")
    return dict(zip(chunk_keys(name, len(pieces)), pieces, strict=True))


def bucket_hash(session_id: str) -> int:
    return zlib.crc32(session_id.encode())


def _entry_chars(session_id: str, record: dict) -> int:
    """Characters one session adds to a page's JSON (key, colon, value, comma)."""
    return len(json.dumps(session_id)) + len(json.dumps(record, separators=(",", ":"), sort_keys=True)) + 2


@dataclass
class Page:
    """One page thread's sessions. Change them with ``put`` and ``remove`` (they keep the size)."""

    thread_id: str
    sessions: dict[str, dict] = field(default_factory=dict)
    applied: str = ""

    def __post_init__(self) -> None:
        self._chars = sum(_entry_chars(sid, record) for sid, record in self.sessions.items())

    @classmethod
    def from_metadata(cls, thread_id: str, metadata: dict[str, str]) -> Page:
        raw = _join(metadata, "sessions")
        return cls(thread_id, json.loads(raw) if raw else {}, metadata.get("applied", ""))

    def put(self, session_id: str, record: dict) -> None:
        self.remove(session_id)
        self.sessions[session_id] = record
        self._chars += _entry_chars(session_id, record)

    def remove(self, session_id: str) -> dict | None:
        record = self.sessions.pop(session_id, None)
        if record is not None:
            self._chars -= _entry_chars(session_id, record)
        return record

    def encoded_sessions(self) -> str:
        return json.dumps(self.sessions, separators=(",", ":"), sort_keys=True)

    def chars(self) -> int:
        """The length of ``encoded_sessions()``, kept as sessions change."""
        return 1 + self._chars if self.sessions else 2

    def fits(self) -> bool:
        return self.chars() <= PAGE_CAPACITY_CHARS

    def to_metadata(self) -> dict[str, str]:
        return {TYPE_KEY: PAGE_TYPE, "applied": self.applied,
                **_split("sessions", self.encoded_sessions(), PAGE_VALUE_KEYS)}


THREAD_PREFIX = "thread_"


def _short(thread_id: str) -> str:
    return thread_id.removeprefix(THREAD_PREFIX)


def _long(short: str) -> str:
    return short if "_" in short else THREAD_PREFIX + short


@dataclass
class Root:
    """The root: the high water mark and the page directory."""

    thread_id: str
    page_ids: list[str] = field(default_factory=list)
    hwm: str = ""

    @classmethod
    def from_metadata(cls, thread_id: str, metadata: dict[str, str]) -> Root:
        pages = _join(metadata, "pages")
        return cls(thread_id, [_long(p) for p in pages.split(",")] if pages else [], metadata.get("hwm", ""))

    def to_metadata(self) -> dict[str, str]:
        directory = ",".join(_short(p) for p in self.page_ids)
        return {TYPE_KEY: ROOT_TYPE, "hwm": self.hwm, **_split("pages", directory, ROOT_PAGE_KEYS)}

    def bucket(self, session_id: str) -> int:
        return bucket_hash(session_id) % len(self.page_ids)

    def can_double(self, id_length: int = len(THREAD_PREFIX) + 24) -> bool:
        """Whether twice as many page ids still fit in the root's keys."""
        short = id_length - len(THREAD_PREFIX)
        return 2 * len(self.page_ids) * (short + 1) <= ROOT_PAGE_KEYS * MAX_VALUE_LENGTH


#: Double the pages once the table is this full, so single pages rarely overflow.
TARGET_LOAD = 0.6


def needs_growth(root: Root, pages: list[Page], touched: Page) -> bool:
    """A page overflowed, or the table is past its target load (then only if it can still double)."""
    if not touched.fits():
        return True
    if not root.can_double():
        return False
    return sum(p.chars() for p in pages) > TARGET_LOAD * PAGE_CAPACITY_CHARS * len(pages)


def double(root: Root, pages: list[Page], make_page) -> list[Page]:
    """Twice as many pages, all new, with every session where its id now hashes.

    The old pages are left as they are: the caller writes the new ones, then
    the root (the switch to the new directory is that one write), then deletes
    the old page threads. A crash before the root write leaves the old layout
    whole.
    """
    if not root.can_double():
        raise RegistryFull(f"the root holds {len(root.page_ids)} pages; twice as many do not fit")
    fresh = [make_page() for _ in range(2 * len(pages))]
    root.page_ids = [page.thread_id for page in fresh]
    for page in pages:
        for session_id, record in page.sessions.items():
            fresh[root.bucket(session_id)].put(session_id, record)
    return fresh


def put(root: Root, pages: list[Page], session_id: str, record: dict, make_page) -> bool:
    """Store a record; True when the pages doubled (every page changed)."""
    pages[root.bucket(session_id)].put(session_id, record)
    if not needs_growth(root, pages, pages[root.bucket(session_id)]):
        return False
    pages[:] = double(root, pages, make_page)
    return True
