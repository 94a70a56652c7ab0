"""The session registry, kept in backend metadata beyond the assistant's own 16 keys.

A format, below its users: the publish queue's processor writes it, the embedded API's scopes read it (a key
limited to an assistant reaches its registry's threads), so it imports nothing of the app but ``metadata``.

Layout (all in metadata, readable by any process; the keys are a contract, docs/events.md):

- the assistant's ``betaassi_registry`` key names the registry's *root* thread;
- the root holds ``hwm`` (the last event applied), ``key`` (the registry's
  secret hash key, 32 hex digits) and ``pages``: the *bucket* head threads'
  ids, comma-separated, chunked over ``pages``, ``pages.1``... (13 keys);
- a bucket's *head* thread holds ``applied`` (the last event applied to it)
  and either its sessions, a JSON object ``{session_id: record}`` chunked over
  ``sessions``, ``sessions.1``... (14 keys, about 80 short sessions or 30 of
  the longest), or, when they do not fit, ``more``: the directory of its
  *overflow* pages, ``[[first session id, thread id], ...]`` in session-id
  order, each overflow thread holding a contiguous run of the bucket's
  sessions (15 keys).

A session lives in bucket ``blake2b(session_id, key=secret) % len(pages)``.
The secret is drawn per registry and kept in the root, so someone who can
only start sessions (and never reads the root) cannot aim ids at one bucket.
The number of buckets doubles (every session rehashed into new head threads,
switched to in one root write) when the table passes 60% full, up to 256
buckets, so buckets stay evenly filled and a small registry has few of them.
Ids that share a bucket anyway (an adversary who knows the secret, or ids
whose whole hash values collide, which doubling never separates) spill into
overflow pages: nothing valid ever overflows for good.

Bounds: a bucket holds at least 1,500 sessions of the largest size (60-character
id, 100-character model, a thread) and about 7,000 typical ones (``chat-1a2b3c4d``,
a thread) even when every one of them collides; 256 buckets hold over 10,000
typical sessions without any overflow page. Finding a session reads the root and
its bucket's head (2 reads); in an overflowed bucket, also the one overflow page
whose id range holds it (3 reads, never more). A create or update that would not
fit an overflowed bucket's directory is rejected with a reason (that takes about
1,500 ids colliding under the secret), never a stall.

Registries of the old layout (no ``key``: ``crc32(session_id)`` buckets) stay
readable; the processor rehashes one under a fresh secret on its first write.
Overflow pages are written copy-on-write (an unchanged run keeps its thread;
a changed one gets a new thread, the head switches to it in one write), so a
crash at any point leaves the head's layout whole. A change that keeps the
directory as it is (one run changed, its first id the same) rewrites that run
in place instead, with ``applied`` (one write, atomic: no thread created,
no head written, none deleted); a replay skips what the head's or a run's
``applied`` holds. Runs keep their boundaries
from one write to the next (a run past its capacity is split, runs are packed
75% full), so a change rewrites the one run it falls in, not every run after it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import secrets
import zlib
from dataclasses import dataclass, field

from betaassi_django.metadata import MAX_VALUE_LENGTH, TYPE_KEY, chunk_keys

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
_DIRECTORY_ID_CHARS = 2 + 64


class RegistryFull(Exception):
    """The layout cannot hold this (more buckets than the root holds, a bucket directory past its keys)."""


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


def new_key() -> str:
    """A registry's secret hash key."""
    return secrets.token_hex(16)


def bucket_hash(session_id: str, key: str = "") -> int:
    """The keyed 64-bit hash of a session id (``crc32`` for a registry of the old layout, without a key)."""
    data = session_id.encode("utf-8", "surrogatepass")
    if not key:
        return zlib.crc32(data)
    return int.from_bytes(hashlib.blake2b(data, key=bytes.fromhex(key), digest_size=8).digest(), "big")


def _entry_chars(session_id: str, record: dict) -> int:
    """Characters one session adds to a page's JSON (key, colon, value, comma)."""
    return len(json.dumps(session_id)) + len(json.dumps(record, separators=(",", ":"), sort_keys=True)) + 2


def _encode(sessions: dict[str, dict]) -> str:
    return json.dumps(sessions, separators=(",", ":"), sort_keys=True)


@dataclass
class Page:
    """One bucket: its head thread's and overflow pages' sessions. Change them with ``put`` and ``remove``."""

    thread_id: str
    sessions: dict[str, dict] = field(default_factory=dict)
    applied: str = ""
    #: The overflow pages as read: ``(first session id, thread id)`` in order.
    directory: list[tuple[str, str]] = field(default_factory=list, compare=False)
    #: Each overflow page's encoded sessions as read -> its thread (an unchanged run keeps its thread).
    stored_runs: dict[str, str] = field(default_factory=dict, compare=False)
    #: The ``applied`` of overflow pages rewritten in place (a replay skips what they already hold).
    marks: set[str] = field(default_factory=set, compare=False)

    def __post_init__(self) -> None:
        #: Each session's characters in the page's JSON (kept, so laying out runs encodes nothing).
        self._sizes = {sid: _entry_chars(sid, record) for sid, record in self.sessions.items()}
        self._chars = sum(self._sizes.values())
        #: Upper bounds of one entry's characters and of one quoted session id's (for ``fits`` without a layout).
        self._widest = max(self._sizes.values(), default=0)
        self._longest_id = max((len(json.dumps(sid)) for sid in self.sessions), default=0)

    @classmethod
    def from_metadata(cls, thread_id: str, metadata: dict[str, str]) -> Page:
        """The head's part; ``absorb`` each page of ``directory`` for the rest."""
        raw, more = _join(metadata, "sessions"), _join(metadata, "more")
        page = cls(thread_id, json.loads(raw) if raw else {}, metadata.get("applied", ""))
        page.directory = [(first, _long(thread)) for first, thread in json.loads(more)] if more else []
        return page

    def absorb(self, thread_id: str, metadata: dict[str, str]) -> None:
        """Add one overflow page's sessions (read from its thread)."""
        raw = _join(metadata, "sessions")
        for session_id, record in (json.loads(raw) if raw else {}).items():
            self.put(session_id, record)
        self.stored_runs[raw] = thread_id
        if metadata.get("applied"):
            self.marks.add(metadata["applied"])

    def overflow_for(self, session_id: str) -> str | None:
        """The overflow thread whose run would hold ``session_id`` (None without overflow pages)."""
        if not self.directory:
            return None
        index = bisect.bisect_right([first for first, _ in self.directory], session_id) - 1
        return self.directory[max(index, 0)][1]

    def put(self, session_id: str, record: dict) -> None:
        self.remove(session_id)
        self.sessions[session_id] = record
        entry = self._sizes[session_id] = _entry_chars(session_id, record)
        self._chars += entry
        self._widest = max(self._widest, entry)
        self._longest_id = max(self._longest_id, len(json.dumps(session_id)))

    def remove(self, session_id: str) -> dict | None:
        record = self.sessions.pop(session_id, None)
        if record is not None:
            self._chars -= self._sizes.pop(session_id)
        return record

    def encoded_sessions(self) -> str:
        return _encode(self.sessions)

    def chars(self) -> int:
        """The length of ``encoded_sessions()``, kept as sessions change."""
        return 1 + self._chars if self.sessions else 2

    def fits_head(self) -> bool:
        """Whether every session fits in the head thread itself (no overflow pages)."""
        return self.chars() <= PAGE_CAPACITY_CHARS

    def runs(self) -> list[dict[str, dict]]:
        """The sessions cut into overflow-page runs, in session-id order (empty when the head holds them).

        Where the bucket already has a directory, its runs keep their boundaries (a run past its capacity is
        split, an emptied one dropped), so a change rewrites the one run it falls in: the others encode as they
        were stored and keep their threads. Packed anew (each run filled to ``RUN_FILL``, leaving room to grow)
        when there is no directory, and filled to the brim only when nothing else fits the head's directory.
        """
        if self.fits_head():
            return []
        ordered = sorted(self.sessions.items())
        layouts = [lambda: _pack(ordered, RUN_FILL * OVERFLOW_CAPACITY_CHARS, self._sizes),
                   lambda: _pack(ordered, OVERFLOW_CAPACITY_CHARS, self._sizes)]
        if self.directory:
            layouts.insert(0, lambda: self._kept_runs(ordered))
        for layout in layouts[:-1]:
            runs = layout()
            if directory_chars([min(run) for run in runs]) <= PAGE_CAPACITY_CHARS:
                return runs
        return layouts[-1]()

    def _kept_runs(self, ordered: list[tuple[str, dict]]) -> list[dict[str, dict]]:
        """The sessions in the directory's runs (by their first ids); a run grown past capacity is packed anew."""
        firsts = [first for first, _ in self.directory]
        groups: list[list[tuple[str, dict]]] = [[] for _ in firsts]
        for item in ordered:
            groups[max(bisect.bisect_right(firsts, item[0]) - 1, 0)].append(item)
        runs: list[dict[str, dict]] = []
        for group in groups:
            if 1 + sum(self._sizes[sid] for sid, _ in group) <= OVERFLOW_CAPACITY_CHARS:
                runs += [dict(group)] if group else []
            else:
                runs += _pack(group, RUN_FILL * OVERFLOW_CAPACITY_CHARS, self._sizes)
        return runs

    def fits(self) -> bool:
        """Whether the bucket can be laid out: in its head, or through a directory that fits the head's keys."""
        if self.fits_head():
            return True
        # Packed to the brim, every run but the last holds more than capacity - widest entry - 1 characters
        # of entries: a bound on the number of runs, so most checks need no layout (no sort of the bucket).
        room = OVERFLOW_CAPACITY_CHARS - self._widest - 1
        if room > 0:
            most_runs = (self._chars + OVERFLOW_CAPACITY_CHARS - self._widest) // room + 1
            if 2 + most_runs * (self._longest_id + _DIRECTORY_ID_CHARS + 4) <= PAGE_CAPACITY_CHARS:
                return True
        return directory_chars([min(run) for run in self.runs()]) <= PAGE_CAPACITY_CHARS

    def head_metadata(self, directory: list[tuple[str, str]] | None = None) -> dict[str, str]:
        """The head thread's metadata: the sessions, or (overflowed) the directory of its overflow pages."""
        if directory:
            more = json.dumps([[first, _short(thread)] for first, thread in directory], separators=(",", ":"))
            return {TYPE_KEY: PAGE_TYPE, "applied": self.applied, **_split("more", more, PAGE_VALUE_KEYS)}
        return {TYPE_KEY: PAGE_TYPE, "applied": self.applied,
                **_split("sessions", self.encoded_sessions(), PAGE_VALUE_KEYS)}

    def to_metadata(self) -> dict[str, str]:
        """The head's metadata when it holds every session (``RegistryFull`` otherwise)."""
        return self.head_metadata()


#: How full a newly packed overflow run is made: the rest is room for the sessions that arrive later.
RUN_FILL = 0.75


def _pack(ordered: list[tuple[str, dict]], limit: float, sizes: dict[str, int]) -> list[dict[str, dict]]:
    """Sessions in order, cut into runs of at most ``limit`` characters of JSON each (at least one session)."""
    runs: list[dict[str, dict]] = [{}]
    used = 1  # a run's JSON is 1 + the sum of its entries' characters
    for session_id, record in ordered:
        entry = sizes[session_id]
        if runs[-1] and used + entry > limit:
            runs.append({})
            used = 1
        runs[-1][session_id] = record
        used += entry
    return runs


def directory_chars(firsts: list[str]) -> int:
    """The most characters a directory of overflow runs starting at ``firsts`` can take."""
    return 2 + sum(len(json.dumps(first)) + _DIRECTORY_ID_CHARS + 4 for first in firsts)


def overflow_metadata(encoded_run: str, applied: str = "") -> dict[str, str]:
    """A new overflow page; ``applied``: a run rewritten in place, which carries the bucket's last event."""
    if applied:
        return {TYPE_KEY: OVERFLOW_TYPE, "applied": applied,
                **_split("sessions", encoded_run, OVERFLOW_VALUE_KEYS - 1)}
    return {TYPE_KEY: OVERFLOW_TYPE, **_split("sessions", encoded_run, OVERFLOW_VALUE_KEYS)}


def in_place_run(page: Page, encoded_runs: list[str], firsts: list[str]) -> int | None:
    """The one run a change fell in, when it can be rewritten in its own thread: the directory stays as it is
    (same runs, same first ids, every other run unchanged) and the run fits beside ``applied``. None otherwise
    (copy-on-write: a new thread, then the head)."""
    if len(firsts) != len(page.directory) or firsts != [first for first, _ in page.directory]:
        return None
    changed = [i for i, encoded in enumerate(encoded_runs) if page.stored_runs.get(encoded) != page.directory[i][1]]
    if len(changed) != 1 or len(encoded_runs[changed[0]]) > IN_PLACE_CAPACITY_CHARS:
        return None
    return changed[0]


def encode_run(run: dict[str, dict]) -> str:
    return _encode(run)


THREAD_PREFIX = "thread_"


def _short(thread_id: str) -> str:
    return thread_id.removeprefix(THREAD_PREFIX)


def _long(short: str) -> str:
    return short if "_" in short else THREAD_PREFIX + short


@dataclass
class Root:
    """The root: the high water mark, the hash key and the bucket directory."""

    thread_id: str
    page_ids: list[str] = field(default_factory=list)
    hwm: str = ""
    key: str = ""

    @classmethod
    def from_metadata(cls, thread_id: str, metadata: dict[str, str]) -> Root:
        pages = _join(metadata, "pages")
        key = metadata.get("key", "")
        if key and (len(key) != 32 or any(c not in "0123456789abcdef" for c in key)):
            raise ValueError(f"registry {thread_id} has a malformed key")
        return cls(thread_id, [_long(p) for p in pages.split(",")] if pages else [], metadata.get("hwm", ""), key)

    def to_metadata(self) -> dict[str, str]:
        directory = ",".join(_short(p) for p in self.page_ids)
        keyed = {"key": self.key} if self.key else {}
        return {TYPE_KEY: ROOT_TYPE, "hwm": self.hwm, **keyed, **_split("pages", directory, ROOT_PAGE_KEYS)}

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


def page_threads(page: Page) -> list[str]:
    """Every thread of a bucket as read: its head, then its overflow pages."""
    return [page.thread_id, *(thread for _, thread in page.directory)]
