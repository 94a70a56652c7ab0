"""Applying publish-queue events to the registry pages: the processor's pure core.

``apply_events`` folds events, in order, into the pages held in memory and says
which pages changed. It does no I/O, so the rules that make the processor
crash-safe are stated (and tested) here:

- every changed page is written with ``applied`` = the last event of the
  batch, and the root with ``hwm`` = that event, after the pages;
- after a crash, the events after the root's ``hwm`` are read again; an event
  whose page already carries an ``applied`` at or after it is skipped, so no
  event takes effect twice and none is lost;
- rejected events and no-ops change nothing, and replaying them gives the
  same verdict.

What the processor knows from outside the registry (which owners exist, how
each named thread is tagged) comes in as ``Facts``, read before the fold; the
fold trusts nothing else of an event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from betaassi_django import quotas
from betaassi_django.registry.pages import Page
from betaassi_django.registry.root import Root

from .backend import tagged_for
from .events import Event, Rejected, check_session_args, parse
from .kinds import BY_CODE, CODES, context_refusal

NO_ROOM = "the registry has no room for this session (its bucket's overflow directory is full)"
FOREIGN_THREAD = "thread_id names a thread that was not created for this session of this assistant"


@dataclass
class Outcome:
    event_id: str
    op: str
    session_id: str | None
    status: str  # applied | noop | rejected | replayed | passed (app.event: nothing to apply)
    reason: str = ""


@dataclass
class Facts:
    """What the fold may rely on beyond the events: None means "not checked" (the pure tests)."""

    assistant_id: str = ""
    owners: set[int] | None = None  # the user ids that exist, of those the events name
    threads: dict[str, dict] | None = None  # thread id -> its metadata (absent: the thread does not exist)
    #: The operator's limits (``betaassi_django.quotas``): why a model may not be chosen (None: not checked),
    #: sessions per owner (per assistant, in all; 0: unlimited), owners exempt, owners' sessions elsewhere.
    model_refusal: Callable[[str | None], str | None] | None = None
    session_limits: tuple[int, int] = (0, 0)
    exempt: set[int] = field(default_factory=set)
    elsewhere: dict[int, int] = field(default_factory=dict)
    counts: Counter | None = None  # sessions per owner in this registry, counted once per batch, kept current

    def owner_exists(self, owner: int) -> bool:
        return self.owners is None or owner in self.owners

    def refuse_model(self, args: dict) -> str | None:
        return self.model_refusal(args.get("model")) if self.model_refusal and "model" in args else None

    def refuse_session(self, owner: int, pages: list[Page]) -> str | None:
        """Why the owner may not have another session here (counted from the registry itself)."""
        per_assistant, total = self.session_limits
        if not (per_assistant or total) or owner in self.exempt:
            return None
        if self.counts is None:
            self.counts = Counter(r.get("o") for page in pages for r in page.sessions.values())
        here = self.counts[owner]
        return quotas.session_refusal(on_assistant=here, in_all=here + self.elsewhere.get(owner, 0),
                                      per_assistant=per_assistant, total=total)

    def counted(self, owner, change: int) -> None:
        if self.counts is not None:
            self.counts[owner] += change

    def thread_is_for(self, thread_id: str, session_id: str) -> bool:
        return self.threads is None or tagged_for(self.threads.get(thread_id), self.assistant_id, session_id)


def wanted(events: list[tuple[str, str]]) -> tuple[set[int], set[str], bool]:
    """What to read as ``Facts`` for a batch: the owners and threads its ``session.create`` events name, and whether
    an event chooses a session's model (judged against the assistant's own model)."""
    owners, threads, models = set(), set(), False
    for _, content in events:
        try:
            event = parse(content)
        except Rejected:
            continue
        if event.op == "session.create":
            owners.add(event.args["owner"])
            if event.args.get("thread_id"):
                threads.add(event.args["thread_id"])
        if event.op in ("session.create", "session.update") and event.args.get("model") is not None:
            models = True
    return owners, threads, models


@dataclass
class Batch:
    outcomes: list[Outcome] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)  # indexes of pages to write
    #: (thread id, session id) of session threads to delete after the commit (each only if tagged so)
    deleted_threads: list[tuple[str, str]] = field(default_factory=list)
    #: assistant.set (its outcome, field, value), in order: the processor applies them and may reject
    settings: list[tuple[Outcome, str, object]] = field(default_factory=list)
    #: consumer.register / consumer.unregister (its outcome, the event), in order: the processor applies them to
    #: the consumer directory (the publish thread's metadata) and may reject them or find them no-ops
    consumers: list[tuple[Outcome, Event]] = field(default_factory=list)


def record_for(args: dict, now: int) -> dict:
    """A session's registry record: short keys, so a page holds many."""
    record = {"o": args["owner"], "k": CODES[args.get("kind", "default")], "c": now, "r": 0}
    if args.get("context_messages") is not None:
        record["n"] = args["context_messages"]
    if args.get("model"):
        record["m"] = args["model"]
    if args.get("thread_id"):
        record["t"] = args["thread_id"]
    return record


def session_from_record(session_id: str, record: dict) -> dict:
    """A record in the words of the Python API."""
    return {
        "session_id": session_id,
        "owner": record["o"],
        "kind": BY_CODE[record["k"]],
        "context_messages": record.get("n"),
        "model": record.get("m"),
        "thread_id": record.get("t"),
        "created_at": record["c"],
        "revision": record["r"],
    }


def _update(record: dict, args: dict) -> tuple[dict | None, str]:
    """The updated record, or None and why the update cannot apply."""
    kind = BY_CODE[record["k"]]
    new_kind = args.get("kind", kind)
    count = args["context_messages"] if "context_messages" in args else record.get("n")
    if new_kind != "manyshots":
        count = None if "context_messages" not in args else count
    refusal = context_refusal(new_kind, count)
    if refusal:
        return None, refusal
    updated = {**record, "k": CODES[new_kind], "r": record["r"] + 1}
    updated.pop("n", None)
    if count is not None:
        updated["n"] = count
    if "model" in args:
        updated.pop("m", None)
        if args["model"]:
            updated["m"] = args["model"]
    return updated, ""


def _already_applied(page: Page, position: int, order: dict[str, int]) -> bool:
    """Whether the page was written after this event in an earlier, interrupted commit."""
    return any(mark in order and order[mark] >= position for mark in (page.applied, *page.marks))


def _create(pages: list[Page], page: Page, event: Event, now: int, batch: Batch, facts: Facts) -> tuple[str, str]:
    session_id, thread_id = event.session_id, event.args.get("thread_id")
    ours = bool(thread_id) and facts.thread_is_for(thread_id, session_id)
    current = page.sessions.get(session_id)
    if thread_id and not ours:
        return "rejected", FOREIGN_THREAD  # never used, never deleted: it is someone else's
    status, reason = "applied", ""
    if current is not None:
        status, reason = "noop", "the session exists"
    elif not facts.owner_exists(event.args["owner"]):
        status, reason = "rejected", f"owner {event.args['owner']} is not a user"
    elif refusal := facts.refuse_model(event.args) or facts.refuse_session(event.args["owner"], pages):
        status, reason = "rejected", refusal
    else:
        page.put(session_id, record_for(event.args, now))
        if not page.fits():
            page.remove(session_id)
            status, reason = "rejected", NO_ROOM
        else:
            facts.counted(event.args["owner"], 1)
    if thread_id and status != "applied" and (current is None or thread_id != current.get("t")):
        batch.deleted_threads.append((thread_id, session_id))  # the publisher's thread is not needed
    return status, reason


def apply_event(root: Root, pages: list[Page], event: Event, now: int, batch: Batch, event_id: str,
                facts: Facts | None = None) -> None:
    index = root.bucket(event.session_id)
    page = pages[index]
    current = page.sessions.get(event.session_id)
    outcome = Outcome(event_id, event.op, event.session_id, "applied")
    if event.op == "session.create":
        outcome.status, outcome.reason = _create(pages, page, event, now, batch, facts or Facts())
    elif event.op == "session.update":
        refusal = (facts or Facts()).refuse_model(event.args)
        if current is None:
            outcome.status, outcome.reason = "noop", "no such session"
        elif refusal:
            outcome.status, outcome.reason = "rejected", refusal
        else:
            updated, reason = _update(current, event.args)
            if updated is not None:
                page.put(event.session_id, updated)
                if not page.fits():
                    page.put(event.session_id, current)
                    updated, reason = None, NO_ROOM
            if updated is None:
                outcome.status, outcome.reason = "rejected", reason
    else:  # session.delete
        if current is None:
            outcome.status, outcome.reason = "noop", "no such session"
        else:
            page.remove(event.session_id)
            (facts or Facts()).counted(current.get("o"), -1)
            if current.get("t"):
                batch.deleted_threads.append((current["t"], event.session_id))
    if outcome.status == "applied":
        batch.changed.add(index)
    batch.outcomes.append(outcome)


def apply_events(root: Root, pages: list[Page], events: list[tuple[str, str]], now: int,
                 facts: Facts | None = None) -> Batch:
    """Fold ``(event_id, content)`` pairs, in order, into ``pages``; returns what happened.

    Growing the table is the caller's job: it doubles the pages with ``registry.double`` after the fold.
    """
    batch = Batch()
    order = {event_id: position for position, (event_id, _) in enumerate(events)}
    for position, (event_id, content) in enumerate(events):
        try:
            event = parse(content)
        except Rejected as exc:
            batch.outcomes.append(Outcome(event_id, "", None, "rejected", str(exc)))
            continue
        if event.op == "app.event":
            batch.outcomes.append(Outcome(event_id, event.op, None, "passed"))
            continue
        if event.op == "assistant.set":
            outcome = Outcome(event_id, event.op, None, "applied")
            batch.settings.append((outcome, event.args["field"], event.args["value"]))
            batch.outcomes.append(outcome)
            continue
        if event.op in ("consumer.register", "consumer.unregister"):
            outcome = Outcome(event_id, event.op, None, "applied")
            batch.consumers.append((outcome, event))
            batch.outcomes.append(outcome)
            continue
        if _already_applied(pages[root.bucket(event.session_id)], position, order):
            batch.outcomes.append(Outcome(event_id, event.op, event.session_id, "replayed",
                                          "applied before an interrupted commit"))
            continue
        apply_event(root, pages, event, now, batch, event_id, facts)
    if events:
        last = events[-1][0]
        for index in batch.changed:
            pages[index].applied = last
        root.hwm = last
    return batch


__all__ = ["Batch", "Facts", "Outcome", "apply_events", "check_session_args", "record_for", "session_from_record",
           "wanted"]
