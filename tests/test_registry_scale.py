"""Issue 16: a registry of many sessions stays cheap to change.

An overflowed bucket keeps its runs' boundaries, so a change rewrites the one run it falls in (one new overflow
thread, not every run after it); ``fits`` decides without laying the bucket out when a bound allows, and agrees
with the layout; a backlog of events is applied in batches of up to ten lists, each changed page written once.
"""

from __future__ import annotations

import random

import pytest
from django.contrib.auth import get_user_model

from betaassi_django.client import get_client, use_clients
from betaassi_django.models import PublishedEvent, PublishState, Session
from betaassi_django.publishing.apply import record_for
from betaassi_django.publishing.backend import REGISTRY_KEY, load_registry
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.registry.layout import OVERFLOW_CAPACITY_CHARS, PAGE_CAPACITY_CHARS
from betaassi_django.registry.pages import Page, directory_chars, encode_run, overflow_metadata
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

THREAD = "thread_" + "a" * 24


def _typical(index: int) -> tuple[str, dict]:
    return f"chat-{index:08x}", record_for({"owner": 7, "thread_id": THREAD}, 1795579130)


def _stored(page: Page) -> tuple[dict[str, str], dict[str, str]]:
    """The bucket written as the processor writes it, then read back: (head metadata, overflow threads)."""
    runs = page.runs()
    overflow = {f"thread_run{n:021d}": overflow_metadata(encode_run(run)) for n, run in enumerate(runs)}
    head = page.head_metadata([(min(run), t) for run, t in zip(runs, overflow, strict=True)])
    return head, overflow


def _read(head: dict[str, str], overflow: dict[str, dict[str, str]]) -> Page:
    page = Page.from_metadata("thread_head", head)
    for _, thread_id in page.directory:
        page.absorb(thread_id, overflow[thread_id])
    return page


def test_a_change_to_an_overflowed_bucket_rewrites_only_the_run_it_falls_in():
    page = Page("thread_head", dict(_typical(i) for i in range(0, 4000, 2)))  # 2,000 sessions
    head, overflow = _stored(page)
    assert len(overflow) == 32  # each run packed to 75%: room for the sessions that come later
    read = _read(head, overflow)
    assert read.sessions == page.sessions

    read.put(*_typical(1001))  # one new session in the middle
    runs = read.runs()
    changed = [run for run in runs if encode_run(run) not in read.stored_runs]
    assert len(runs) == 32 and len(changed) == 1 and "chat-000003e9" in changed[0]

    read.remove("chat-00000000")  # the first session of the first run: that run only, its first id moves
    changed = [run for run in read.runs() if encode_run(run) not in read.stored_runs]
    assert len(changed) == 2 and min(changed[0]) == "chat-00000002"


def test_a_run_past_its_capacity_is_split_and_the_others_keep_their_threads():
    page = Page("thread_head", dict(_typical(i) for i in range(0, 4000, 2)))
    read = _read(*_stored(page))
    first_run = read.runs()[0]
    for index in range(1, 2 * len(first_run), 2):  # as many new sessions again, all inside the first run
        read.put(*_typical(index))
    runs = read.runs()
    assert all(len(encode_run(run)) <= OVERFLOW_CAPACITY_CHARS for run in runs)
    kept = [run for run in runs if encode_run(run) in read.stored_runs]
    assert len(first_run) == 63 and len(kept) == 31 and len(runs) == 33  # the grown run became two, at 75%
    assert {k for run in runs for k in run} == set(read.sessions)


@pytest.mark.parametrize("seed", range(6))
def test_fits_agrees_with_the_layout(seed):
    rng = random.Random(seed)
    page = Page("thread_head")
    model = "m" * rng.choice((1, 50, 100))
    for index in range(rng.choice((100, 800, 1500, 2500))):
        session_id = f"{index:x}".rjust(rng.choice((8, 60)), "0")
        page.put(session_id, record_for({"owner": 7, "model": model, "thread_id": THREAD, "kind": "manyshots",
                                         "context_messages": 1000}, 1795579130))
        if index % 97 == 0:
            fits = page.fits()
            laid_out = page.fits_head() or directory_chars([min(r) for r in page.runs()]) <= PAGE_CAPACITY_CHARS
            assert fits == laid_out


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
def test_a_backlog_of_250_creates_is_one_batch_with_each_changed_page_written_once():
    user = get_user_model().objects.create_user("scale", password="x")
    support = Support.objects.create()
    events = [publish(support, Event("session.create", f"s-{i:03d}", {"owner": user.pk})) for i in range(250)]
    client, calls = counting_client(backend="embedded")
    with use_clients(client):
        assert Processor(assistant_ids=[support.id]).run_once() == 250
    kinds = [(method, path.rsplit("/", 1)[-1]) for method, path in calls]
    lists = [c for c in kinds if c == ("GET", "messages")]
    assert len(lists) == 4  # 100 + 100 + 50 in one batch, then the empty list that ends the drain
    # One batch: the one bucket went past its load, so the table grew four times over at once: 4 new heads
    # (create, then write), the root, the old head deleted; the assistant read once, the root and old head loaded.
    assert len(calls) == 1 + 2 + 4 + 2 * 4 + 1 + 1
    assert set(PublishedEvent.objects.filter(event_id__in=events).values_list("status", flat=True)) == {"applied"}
    root, pages = load_registry(get_client(), support.metadata[REGISTRY_KEY])
    assert len(pages) == 4 and root.hwm == events[-1] and all(page.applied == events[-1] for page in pages)
    assert Session.objects.filter(assistant_id=support.id).count() == 250


@pytestmark_db
def test_a_lookup_keeps_the_root_and_reads_it_again_once_the_table_grew():
    user = get_user_model().objects.create_user("kept", password="x")
    support = Support.objects.create()
    for index in range(20):
        publish(support, Event("session.create", f"k-{index:03d}", {"owner": user.pk}))
    Processor(assistant_ids=[support.id]).run_once()
    client, calls = counting_client(backend="embedded")
    with use_clients(client):
        assert support.sessions.get("k-000").owner_id == user.pk
        assert len(calls) == 2  # the root, the head
        calls.clear()
        assert support.sessions.get("k-019").owner_id == user.pk and support.sessions.get("nope") is None
        assert len(calls) == 2  # the head alone, twice
    for index in range(20, 300):  # the table grows: its old head is deleted before the batch is recorded
        publish(support, Event("session.create", f"k-{index:03d}", {"owner": user.pk}))
    Processor(assistant_ids=[support.id]).run_once()
    with use_clients(client):
        calls.clear()
        assert support.sessions.get("k-299").owner_id == user.pk
        assert len(calls) == 3  # the kept head is gone: the root again, then the new head
        calls.clear()
        assert support.sessions.get("k-000").owner_id == user.pk
        assert len(calls) == 1


def _one_bucket(monkeypatch) -> None:
    """A table that never grows: its one bucket spills into overflow runs after about 80 sessions."""
    from betaassi_django.registry.root import Root

    monkeypatch.setattr(Root, "can_hold", lambda self, count, id_length=0: count <= 1)


@pytestmark_db
def test_a_create_in_an_overflowed_bucket_rewrites_its_run_in_place(monkeypatch):
    _one_bucket(monkeypatch)
    user = get_user_model().objects.create_user("inplace", password="x")
    support = Support.objects.create()
    for index in range(0, 400, 2):
        publish(support, Event("session.create", f"p-{index:04d}", {"owner": user.pk}))
    processor = Processor(assistant_ids=[support.id])
    processor.run_once()
    root, pages = load_registry(get_client(), support.metadata[REGISTRY_KEY])
    before = [thread for _, thread in pages[0].directory]
    assert len(pages) == 1 and len(before) > 1
    last = publish(support, Event("session.create", "p-0101", {"owner": user.pk}))
    from betaassi_django.publishing import drain

    done: list[tuple[str, str]] = []
    for name in ("write_metadata", "create_thread", "delete_threads"):
        real = getattr(drain, name)
        monkeypatch.setattr(drain, name, lambda api, arg, *rest, _n=name, _r=real: (
            done.append((_n, arg if isinstance(arg, str) else len(arg))), _r(api, arg, *rest))[1])
    assert processor.run_once() == 1
    run = pages[0].overflow_for("p-0101")
    # No new thread, no head, nothing deleted: the run it falls in, then the root.
    assert done == [("write_metadata", run), ("write_metadata", root.thread_id), ("delete_threads", 0)]
    root, pages = load_registry(get_client(), support.metadata[REGISTRY_KEY])
    assert [thread for _, thread in pages[0].directory] == before and root.hwm == last
    assert pages[0].marks == {last} and pages[0].sessions["p-0101"]["o"] == user.pk and len(pages[0].sessions) == 201
    assert PublishedEvent.objects.get(event_id=last).status == "applied"


@pytestmark_db
def test_a_run_rewritten_in_place_before_a_crash_is_replayed_not_applied_twice(monkeypatch):
    from betaassi_django.publishing import drain

    _one_bucket(monkeypatch)
    user = get_user_model().objects.create_user("replay", password="x")
    support = Support.objects.create()
    for index in range(200):
        publish(support, Event("session.create", f"q-{index:04d}", {"owner": user.pk}))
    Processor(assistant_ids=[support.id]).run_once()
    last = publish(support, Event("session.update", "q-0050", {"model": "gpt-4o"}))
    root_id = support.metadata[REGISTRY_KEY]
    real = drain.write_metadata

    def dies_at_the_root(api, thread_id, metadata):
        if thread_id == root_id:
            raise RuntimeError("killed before the root write")
        real(api, thread_id, metadata)

    monkeypatch.setattr(drain, "write_metadata", dies_at_the_root)
    Processor(assistant_ids=[support.id]).run_once()  # the failure is logged, the event left pending
    assert not PublishedEvent.objects.filter(event_id=last).exists()
    _, pages = load_registry(get_client(), root_id)
    assert pages[0].marks == {last} and pages[0].sessions["q-0050"]["r"] == 1  # the run holds it, the root not
    monkeypatch.setattr(drain, "write_metadata", real)
    PublishState.objects.filter(assistant_id=support.id).update(retry_at=None)  # due again now
    Processor(assistant_ids=[support.id]).run_once()
    root, pages = load_registry(get_client(), root_id)
    assert root.hwm == last and pages[0].sessions["q-0050"]["r"] == 1 and pages[0].sessions["q-0050"]["m"] == "gpt-4o"
    assert PublishedEvent.objects.get(event_id=last).status == "applied"
