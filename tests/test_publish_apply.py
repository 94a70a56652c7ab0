"""The processor's pure core: events folded into registry pages, and replay after a crash."""

from __future__ import annotations

import copy
import random

from betaassi_django.publishing.apply import apply_events, session_from_record
from betaassi_django.publishing.events import Event
from betaassi_django.registry.pages import Page
from betaassi_django.registry.root import Root

NOW = 1795579130


def _table(pages: int = 4) -> tuple[Root, list[Page]]:
    page_list = [Page(f"thread_{i:024d}") for i in range(pages)]
    return Root("thread_root", [p.thread_id for p in page_list]), page_list


def _find(root: Root, pages: list[Page], session_id: str) -> dict | None:
    record = pages[root.bucket(session_id)].sessions.get(session_id)
    return None if record is None else session_from_record(session_id, record)


def _ev(event_id: str, op: str, session_id: str | None, **args) -> tuple[str, str]:
    return event_id, Event(op, session_id, args).to_json()


def test_outcomes_and_records():
    root, pages = _table()
    events = [
        _ev("e1", "session.create", "s1", owner=7, thread_id="thread_s1"),
        _ev("e2", "session.create", "s2", owner=8, kind="manyshots", context_messages=3, model="m1"),
        _ev("e3", "session.create", "s1", owner=9, thread_id="thread_dup"),
        _ev("e4", "session.update", "s1", kind="oneshot"),
        _ev("e5", "session.update", "nope", model="x"),
        _ev("e6", "session.update", "s2", kind="default"),
        ("e7", "{broken"),
        _ev("e8", "session.delete", "s1"),
        _ev("e9", "session.delete", "s1"),
        _ev("e10", "assistant.set", None, field="tier", value=3),
    ]
    batch = apply_events(root, pages, events, NOW)
    assert [(o.event_id, o.status) for o in batch.outcomes] == [
        ("e1", "applied"), ("e2", "applied"), ("e3", "noop"), ("e4", "applied"), ("e5", "noop"),
        ("e6", "applied"), ("e7", "rejected"), ("e8", "applied"), ("e9", "noop"), ("e10", "applied")]
    assert batch.outcomes[6].reason == "not valid JSON"
    assert batch.outcomes[2].reason == "the session exists"
    assert _find(root, pages, "s1") is None
    assert _find(root, pages, "s2") == {
        "session_id": "s2", "owner": 8, "kind": "default", "context_messages": None, "model": "m1",
        "thread_id": None, "created_at": NOW, "revision": 1}
    assert batch.deleted_threads == [("thread_dup", "s1"), ("thread_s1", "s1")]
    assert [(outcome.event_id, name, value) for outcome, name, value in batch.settings] == [("e10", "tier", 3)]
    assert root.hwm == "e10" and all(pages[i].applied == "e10" for i in batch.changed)


def test_an_update_that_breaks_the_kind_rules_is_rejected():
    root, pages = _table()
    apply_events(root, pages, [_ev("e1", "session.create", "s", owner=1)], NOW)
    batch = apply_events(root, pages, [_ev("e2", "session.update", "s", kind="manyshots")], NOW)
    assert (batch.outcomes[0].status, batch.outcomes[0].reason) == (
        "rejected", "context_messages (N >= 1) is required for kind 'manyshots'")
    assert _find(root, pages, "s")["revision"] == 0


def _random_events(rng: random.Random, count: int) -> list[tuple[str, str]]:
    events = []
    for index in range(count):
        session_id = f"s{rng.randrange(30)}"
        op = rng.choice(["session.create", "session.update", "session.update", "session.delete"])
        args = {"owner": 1} if op == "session.create" else {"model": f"m{index}"} if op == "session.update" else {}
        events.append(_ev(f"e{index:04d}", op, session_id, **args))
    return events


def test_replay_after_an_interrupted_commit_applies_each_event_once():
    """Commit writes changed pages, then the root. Crash after any subset of page writes, replay from
    the root's hwm: the result equals the uninterrupted run, revisions included."""
    rng = random.Random(3)
    events = _random_events(rng, 400)
    expected_root, expected_pages = _table()
    for start in range(0, len(events), 50):
        apply_events(expected_root, expected_pages, events[start:start + 50], NOW)

    stored_root, stored_pages = _table()  # what the backend holds
    for start in range(0, len(events), 50):
        chunk = events[start:start + 50]
        work_root, work_pages = copy.deepcopy(stored_root), copy.deepcopy(stored_pages)
        batch = apply_events(work_root, work_pages, chunk, NOW)
        written = [i for i in sorted(batch.changed) if rng.random() < 0.5]  # the crash: some pages, no root
        for index in written:
            stored_pages[index] = copy.deepcopy(work_pages[index])
        # The processor restarts: reads the stored state and the events after the stored hwm again.
        work_root, work_pages = copy.deepcopy(stored_root), copy.deepcopy(stored_pages)
        batch = apply_events(work_root, work_pages, chunk, NOW)
        replayed = {o.event_id for o in batch.outcomes if o.status == "replayed"}
        assert replayed <= {event_id for event_id, _ in chunk}
        stored_root, stored_pages = work_root, work_pages  # this time the commit completes

    assert stored_root.hwm == expected_root.hwm
    assert [p.sessions for p in stored_pages] == [p.sessions for p in expected_pages]
