"""A bucket of the registry (``Page``): its head thread's sessions, or the overflow runs its head's directory names.

The bucket is where the registry's size limits bite: a head thread's keys hold about 80 short sessions, so a
bucket past that is cut into overflow runs, laid out so a change rewrites the one run it falls in (copy-on-write,
or in place with ``applied``). The processor writes what this module lays out; the API's scopes read it.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

from betaassi_django.metadata import TYPE_KEY

from .layout import (
    DIRECTORY_ID_CHARS,
    IN_PLACE_CAPACITY_CHARS,
    OVERFLOW_CAPACITY_CHARS,
    OVERFLOW_TYPE,
    OVERFLOW_VALUE_KEYS,
    PAGE_CAPACITY_CHARS,
    PAGE_TYPE,
    PAGE_VALUE_KEYS,
    join_chunks,
    long_thread,
    short_thread,
    split_chunks,
)


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
        raw, more = join_chunks(metadata, "sessions"), join_chunks(metadata, "more")
        page = cls(thread_id, json.loads(raw) if raw else {}, metadata.get("applied", ""))
        page.directory = [(first, long_thread(thread)) for first, thread in json.loads(more)] if more else []
        return page

    def absorb(self, thread_id: str, metadata: dict[str, str]) -> None:
        """Add one overflow page's sessions (read from its thread)."""
        raw = join_chunks(metadata, "sessions")
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
            if 2 + most_runs * (self._longest_id + DIRECTORY_ID_CHARS + 4) <= PAGE_CAPACITY_CHARS:
                return True
        return directory_chars([min(run) for run in self.runs()]) <= PAGE_CAPACITY_CHARS

    def head_metadata(self, directory: list[tuple[str, str]] | None = None) -> dict[str, str]:
        """The head thread's metadata: the sessions, or (overflowed) the directory of its overflow pages."""
        if directory:
            more = json.dumps([[first, short_thread(thread)] for first, thread in directory],
                              separators=(",", ":"))
            return {TYPE_KEY: PAGE_TYPE, "applied": self.applied, **split_chunks("more", more, PAGE_VALUE_KEYS)}
        return {TYPE_KEY: PAGE_TYPE, "applied": self.applied,
                **split_chunks("sessions", self.encoded_sessions(), PAGE_VALUE_KEYS)}

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
    return 2 + sum(len(json.dumps(first)) + DIRECTORY_ID_CHARS + 4 for first in firsts)


def overflow_metadata(encoded_run: str, applied: str = "") -> dict[str, str]:
    """A new overflow page; ``applied``: a run rewritten in place, which carries the bucket's last event."""
    if applied:
        return {TYPE_KEY: OVERFLOW_TYPE, "applied": applied,
                **split_chunks("sessions", encoded_run, OVERFLOW_VALUE_KEYS - 1)}
    return {TYPE_KEY: OVERFLOW_TYPE, **split_chunks("sessions", encoded_run, OVERFLOW_VALUE_KEYS)}


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


def page_threads(page: Page) -> list[str]:
    """Every thread of a bucket as read: its head, then its overflow pages."""
    return [page.thread_id, *(thread for _, thread in page.directory)]
