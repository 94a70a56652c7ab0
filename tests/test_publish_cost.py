"""What the processor spends per batch: the batch's records in a few statements whatever its size, no lease renewal
right after the lease was taken, and no empty list to end a woken drain."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from betaassi_django.client import use_clients
from betaassi_django.models import PublishedEvent, Session
from betaassi_django.publishing import drain, lease, notify
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


#: The transaction's own statements (SQLite's BEGIN IMMEDIATE and COMMIT are executed as statements).
_FRAME = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")


def _record_statements(monkeypatch) -> list[int]:
    """The statements each ``_record`` of the drains to come executes (in this thread: ``run_once``)."""
    counts: list[int] = []
    record = drain.QueueDrainer._record

    def counted(self, assistant_id, pending):
        with CaptureQueriesContext(connection) as queries:
            record(self, assistant_id, pending)
        counts.append(len([q for q in queries.captured_queries if not q["sql"].startswith(_FRAME)]))

    monkeypatch.setattr(drain.QueueDrainer, "_record", counted)
    return counts


def test_a_batch_is_recorded_in_five_statements_whatever_its_size(monkeypatch):
    users = [get_user_model().objects.create_user(f"owner{i}") for i in range(3)]
    support = Support.objects.create()
    processor = Processor(assistant_ids=[support.id])
    counts = _record_statements(monkeypatch)
    for index in range(40):  # three real owners, and one id no user has (rejected: recorded, not mirrored)
        owner = users[index % 3].pk if index % 4 else 10**9
        publish(support, Event("session.create", f"s{index}", {"owner": owner}))
    assert processor.run_once() == 40
    Session.objects.filter(assistant_id=support.id, session_id="s1").update(
        touched_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    publish(support, Event("session.update", "s1", {"model": "m-2"}))
    publish(support, Event("session.delete", "s2", {}))
    publish(support, Event("session.create", "s3", {"owner": users[0].pk}))  # exists: a no-op
    assert processor.run_once() == 3
    # The outcomes (1), the owners that exist (1), the mirror's upsert (1), the pending records cleared (1); the
    # second batch also deletes a mirror row (1).
    assert counts == [4, 5]

    statuses = dict(PublishedEvent.objects.filter(assistant_id=support.id).values_list("session_id", "status"))
    assert len(statuses) == 43 - 3  # the three later events name sessions of the first batch
    assert statuses["s0"] == "rejected" and statuses["s3"] == "noop" and statuses["s1"] == statuses["s2"] == "applied"
    rejected = PublishedEvent.objects.get(assistant_id=support.id, session_id="s0")
    assert (rejected.op, rejected.reason) == ("session.create", "owner 1000000000 is not a user")
    mirror = {s.session_id: s for s in Session.objects.filter(assistant_id=support.id)}
    assert sorted(mirror) == sorted(f"s{i}" for i in range(40) if i % 4 and i != 2)
    assert (mirror["s1"].owner_id, mirror["s1"].model, mirror["s1"].revision) == (users[1].pk, "m-2", 1)
    assert mirror["s1"].touched_at == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)  # the turns' own column
    assert mirror["s5"].owner_id == users[2].pk and mirror["s5"].thread_id is None


def test_the_first_batch_of_a_drain_is_covered_by_the_lease_just_taken(monkeypatch):
    user = get_user_model().objects.create_user("alice")
    support = Support.objects.create()
    taken: list[str] = []
    acquire = lease.acquire

    def counted(assistant_id, holder, ttl, **kwargs):
        taken.append(assistant_id)
        return acquire(assistant_id, holder, ttl, **kwargs)

    monkeypatch.setattr(lease, "acquire", counted)
    for index in range(25):
        publish(support, Event("session.create", f"s{index}", {"owner": user.pk}))
    processor = Processor(assistant_ids=[support.id], batch_size=2)  # 20 events a batch (10 lists): 2 batches
    assert processor.run_once() == 25
    assert taken == [support.id, support.id]  # taken (the first batch's), renewed before the second
    assert PublishedEvent.objects.filter(assistant_id=support.id, status="applied").count() == 25


def _lists(calls) -> int:
    return len([url for method, url in calls if method == "GET" and url.endswith("/messages")])


def test_a_woken_drain_ends_on_a_short_list_unless_a_wake_up_announced_more(monkeypatch):
    user = get_user_model().objects.create_user("alice")
    support = Support.objects.create()
    processor = Processor(assistant_ids=[support.id])
    processor.run_once()
    publish(support, Event("session.create", "s1", {"owner": user.pk}))
    client, calls = counting_client()
    processor.api = client
    with use_clients(client):
        assert processor.run_pending(notify.take_woken()) == 1
    assert _lists(calls) == 1  # the short list held everything: no empty list to end the drain

    publish(support, Event("session.create", "s2", {"owner": user.pk}))
    record = drain.QueueDrainer._record

    def publishing_meanwhile(self, assistant_id, pending):  # another event, announced, while the batch commits
        record(self, assistant_id, pending)
        if not PublishedEvent.objects.filter(session_id="s3").exists() and "s3" not in published:
            published.append(publish(support, Event("session.create", "s3", {"owner": user.pk})))

    published: list[str] = []
    monkeypatch.setattr(drain.QueueDrainer, "_record", publishing_meanwhile)
    calls.clear()
    with use_clients(client):
        assert processor.run_pending(notify.take_woken()) == 2  # s2, then s3 found by listing again
    assert _lists(calls) == 2
    assert PublishedEvent.objects.get(event_id=published[0]).status == "applied"


def test_the_bare_in_process_client_reaches_the_registry_and_the_queue_without_requests(monkeypatch):
    """With this process's bare in-process client, a session's thread, its event, and the registry's reads and
    writes, the assistant's read and the list of events are store calls (as the views make them), not requests:
    a woken drain sends none. The same events through a counting client still send every request."""
    from betaassi_django.assistants_api.transport import InProcessTransport
    from betaassi_django.publishing.backend import REGISTRY_KEY, find_record

    sent: list[tuple[str, str]] = []
    handle = InProcessTransport.handle_request

    def counted(self, request):
        sent.append((request.method, request.url.path.rsplit("/", 1)[-1]))
        return handle(self, request)

    monkeypatch.setattr(InProcessTransport, "handle_request", counted)
    user = get_user_model().objects.create_user("owner")
    support = Support.objects.create()
    processor = Processor(assistant_ids=[support.id])
    processor.run_once()
    sent.clear()
    event_id = support.sessions.create("s1", owner=user)
    assert sent == []  # the session's thread and its event: two store calls
    assert processor.run_pending(notify.take_woken()) == 1
    assert sent == []
    assert PublishedEvent.objects.get(event_id=event_id).status == "applied"
    record = find_record(processor.api, support.metadata[REGISTRY_KEY], "s1")
    assert record is not None and record["o"] == user.pk

    client, calls = counting_client()  # a wrapped client: every request is sent, as before
    with use_clients(client):
        support.sessions.create("s2", owner=user)
        counted_processor = Processor(assistant_ids=[support.id])
        calls.clear()
        assert counted_processor.run_pending(notify.take_woken()) == 1
    # The assistant, the root, its one page, the list, the session's thread (its tags), the page, the root.
    assert [c[0] for c in calls] == ["GET"] * 5 + ["POST"] * 2
    assert calls[3][1].endswith("/messages") and calls[5][1] == calls[2][1] and calls[6][1] == calls[1][1]
