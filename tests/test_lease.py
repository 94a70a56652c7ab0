"""Publish-queue leases: exclusive on every database, taken over after expiry."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from django.db import connection

from betaassi_django.publishing import lease


@pytest.mark.django_db(transaction=True)
def test_exclusive_then_taken_over_after_expiry():
    assert lease.acquire("asst_1", "p1", ttl=30)
    assert not lease.acquire("asst_1", "p2", ttl=30)
    assert lease.acquire("asst_1", "p1", ttl=0.2)  # renewal by the holder
    assert lease.holds("asst_1", "p1") and not lease.holds("asst_1", "p2")
    time.sleep(0.3)
    assert not lease.holds("asst_1", "p1")
    assert lease.acquire("asst_1", "p2", ttl=30)
    assert not lease.acquire("asst_1", "p1", ttl=30)
    lease.release("asst_1", "p2")
    assert lease.acquire("asst_1", "p1", ttl=30)
    assert lease.acquire("asst_2", "p2", ttl=30)  # leases are per assistant


@pytest.mark.django_db(transaction=True)
def test_contending_processors_never_overlap():
    """Four threads (each its own database connection) fight over two assistants for a while."""
    held: list[tuple[str, str, float, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def processor(name: str) -> None:
        try:
            while time.monotonic() < stop:
                for assistant in ("asst_a", "asst_b"):
                    # A long ttl: only a release can hand the lease over, so any overlap is a bug.
                    if lease.acquire(assistant, name, ttl=30):
                        start = time.monotonic()
                        time.sleep(0.005)
                        end = time.monotonic()
                        lease.release(assistant, name)
                        with lock:
                            held.append((assistant, name, start, end))
        finally:
            connection.close()

    threads = [threading.Thread(target=processor, args=(f"p{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({name for _, name, _, _ in held}) > 1  # it was contended and changed hands
    for assistant in ("asst_a", "asst_b"):
        spans = sorted((start, end, name) for a, name, start, end in held if a == assistant)
        assert len(spans) > 10
        for (_, end, name), (start, _, other) in itertools.pairwise(spans):
            assert start >= end or name == other, f"{name} and {other} overlapped on {assistant}"


@pytest.mark.django_db(transaction=True)
def test_release_says_whether_the_lease_was_held_in_one_statement():
    """The processor's check that it held the lease to the end of a drain is its release: one DELETE (the check
    was a SELECT before it)."""
    from django.test.utils import CaptureQueriesContext

    from betaassi_django.publishing.models import PublishLease

    assert lease.acquire("asst_1", "p1", ttl=30)
    with CaptureQueriesContext(connection) as queries:
        assert lease.release("asst_1", "p1") is True
    verbs = [q["sql"].split()[0] for q in queries.captured_queries]
    assert [verb for verb in verbs if verb not in ("BEGIN", "COMMIT")] == ["DELETE"]  # no SELECT before it
    assert not PublishLease.objects.exists()
    assert lease.acquire("asst_1", "p1", ttl=0.05)
    time.sleep(0.1)
    assert lease.release("asst_1", "p1") is False  # expired: not held to the end, and the row is gone
    assert not PublishLease.objects.exists()
    assert lease.acquire("asst_1", "p2", ttl=30)
    assert lease.release("asst_1", "p1") is False and PublishLease.objects.get().holder == "p2"
