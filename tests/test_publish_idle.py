"""A processor's idle cost does not grow with the number of assistants (issue 16): a wake-up names the queue to
drain, a cycle between wake-ups asks one question (the publish hints), and a slower sweep finds the rest."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from betaassi_django.client import get_client, use_clients
from betaassi_django.models import PublishedEvent
from betaassi_django.publishing import notify
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.models import PublishHint, PublishLease
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

MANY = 30


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice", password="x")


@pytest.fixture
def assistants():
    created = [Support.objects.create() for _ in range(MANY)]
    Processor().run_once()  # whatever saving them published
    PublishHint.objects.all().delete()
    notify.take_woken()
    return created


def _quiet() -> None:
    """Forget the wake-ups and hints so far: what follows is published with neither."""
    PublishHint.objects.all().delete()
    notify.take_woken()


def test_an_idle_cycle_makes_no_backend_request_and_one_query(assistants):
    processor = Processor()
    processor.sweep()
    client, calls = counting_client()
    with use_clients(client), CaptureQueriesContext(connection) as queries:
        processor.api = get_client()
        calls.clear()
        assert processor.run_pending(notify.take_woken()) == 0
    assert calls == []
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert "betaassi_django_publishhint" in queries[0]["sql"]


def test_a_sweep_reads_each_queue_once_and_takes_no_lease_when_nothing_is_new(assistants):
    processor = Processor()
    processor.sweep()  # drains every queue to the end and remembers its newest event
    client, calls = counting_client()
    with use_clients(client):
        processor.api = get_client()
        with CaptureQueriesContext(connection) as queries:
            assert processor.sweep() == 0
    assert [method for method, _ in calls].count("POST") == 0
    newest_reads = [url for method, url in calls if method == "GET" and url.endswith("/messages")]
    assert len(newest_reads) == MANY  # one per queue
    assert len(calls) == MANY + 1  # and one list of the assistants (100 a page)
    assert not any("publishlease" in q["sql"] for q in queries)


def test_a_wake_up_names_its_assistant_and_only_that_queue_is_drained(assistants, user):
    for index, assistant in enumerate(assistants[:3]):
        publish(assistant, Event("session.create", f"s{index}", {"owner": user.pk}))
    _quiet()
    notify.wake(assistants[1].id)
    processor = Processor()
    assert processor.run_pending(notify.take_woken()) == 1
    assert list(PublishedEvent.objects.filter(session_id__in=["s0", "s1", "s2"]).values_list(
        "assistant_id", "session_id", "status")) == [(assistants[1].id, "s1", "applied")]
    assert not PublishHint.objects.exists()  # its hint is cleared once the queue is drained
    assert not PublishLease.objects.exists()


def test_an_event_published_without_a_wake_up_is_applied_by_the_next_cycle(assistants, user):
    event_id = publish(assistants[5], Event("session.create", "s5", {"owner": user.pk}))
    assert notify.take_woken() == {assistants[5].id}  # what the processor would have been woken with: dropped
    assert Processor().run_pending() == 1  # the hint
    assert PublishedEvent.objects.get(event_id=event_id).status == "applied"
    assert not PublishHint.objects.exists()


def test_an_event_with_neither_wake_up_nor_hint_is_applied_by_the_sweep(assistants, user):
    processor = Processor()
    processor.sweep()
    # As another deployment (or a process that died before its hint) publishes: the message only.
    get_client().beta.threads.messages.create(
        assistants[7].metadata[PUBLISH_KEY], role="user", metadata={"betaassi_event": "session.create"},
        content=Event("session.create", "s7", {"owner": user.pk}).to_json())
    _quiet()
    assert processor.run_pending() == 0
    assert processor.sweep() == 1
    assert PublishedEvent.objects.get(session_id="s7").status == "applied"
    assert processor.sweep() == 0


def test_a_hint_stays_while_another_processor_holds_the_lease(assistants, user):
    publish(assistants[2], Event("session.create", "s2", {"owner": user.pk}))
    notify.take_woken()
    other = Processor(holder="other")
    from betaassi_django.publishing import lease

    assert lease.acquire(assistants[2].id, other.holder, 30)
    assert Processor().run_pending() == 0
    assert PublishHint.objects.filter(assistant_id=assistants[2].id).count() == 1  # not acted on: kept
    lease.release(assistants[2].id, other.holder)
    assert Processor().run_pending() == 1
    assert not PublishHint.objects.exists()
