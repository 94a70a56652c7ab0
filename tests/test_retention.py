"""Retention: only the events that the processor and every registered consumer have passed are removed."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from betaassi_django.client import get_client
from betaassi_django.metadata import OWNER_KEY
from betaassi_django.models import PublishedEvent, StreamThread
from betaassi_django.publishing import directory, retention
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(support: Support, count: int, start: int = 0) -> list[str]:
    return [support.queue.set_attr("tier", start + i) for i in range(count)]


def _queue(support: Support) -> list[str]:
    return [m.id for m in get_client().beta.threads.messages.list(support.metadata[PUBLISH_KEY], order="asc")]


def _register(support: Support, name: str, position: str) -> StreamThread:
    """A consumer's position thread and its directory entry, written as the processor writes them."""
    thread = StreamThread.objects.create(consumer=name, assistant_id=support.id, hwm=position)
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    metadata = api.beta.threads.retrieve(publish_id).metadata
    api.beta.threads.update(publish_id, metadata=directory.with_consumer(metadata, name, thread.id))
    return thread


def _unregister(support: Support, name: str) -> None:
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    metadata = api.beta.threads.retrieve(publish_id).metadata
    api.beta.threads.update(publish_id, metadata=directory.without_consumer(metadata, name))


def test_prune_removes_only_what_the_processor_and_every_consumer_passed(backend):
    support = Support.objects.create()
    applied = _publish(support, 6)
    Processor().run_once()
    pending = _publish(support, 4, start=6)
    billing = _register(support, "billing", applied[2])
    audit = _register(support, "audit", applied[4])
    api = get_client()

    assert retention.positions(api, support) == {"": applied[5], "billing": applied[2], "audit": applied[4]}
    assert retention.prune(api, support, keep=0, dry_run=True) == 2
    assert _queue(support) == applied + pending
    assert retention.prune(api, support, keep=0) == 2  # before billing's position; its position itself stays
    assert _queue(support) == applied[2:] + pending
    assert sorted(PublishedEvent.objects.values_list("event_id", flat=True)) == sorted(applied[2:])

    billing.hwm = applied[5]
    billing.save()
    assert retention.prune(api, support, keep=0) == 2  # now audit is the furthest behind
    assert _queue(support) == applied[4:] + pending

    _unregister(support, "audit")
    assert retention.prune(api, support, keep=0) == 1  # the root's hwm event and everything pending stay
    assert _queue(support) == applied[5:] + pending
    assert retention.prune(api, support, keep=0) == 0

    Processor().run_once()  # the processor goes on after its (kept) high water mark
    assert Support.retrieve(support.id).tier == 9
    assert retention.prune(api, support, keep=0) == 0  # billing still at applied[5]
    billing.hwm = pending[3]
    billing.save()
    assert retention.prune(api, support, keep=0) == 4
    assert _queue(support) == pending[3:]
    assert list(PublishedEvent.objects.values_list("event_id", flat=True)) == [pending[3]]
    assert StreamThread.objects.filter(pk=audit.pk).exists()  # unregistering leaves the thread to its owner


def test_the_newest_keep_events_stay_whatever_the_positions():
    support = Support.objects.create()
    events = _publish(support, 10)
    Processor().run_once()
    api = get_client()
    assert retention.prune(api, support, keep=3) == 7
    assert _queue(support) == events[7:]
    assert retention.prune(api, support, keep=3) == 0
    assert retention.prune(api, support, keep=20) == 0
    with pytest.raises(ValueError, match="keep=-1 must not be negative"):
        retention.prune(api, support, keep=-1)


def test_nothing_goes_before_the_processor_applied_anything():
    support = Support.objects.create()
    events = _publish(support, 3)
    assert retention.prune(get_client(), support, keep=0) == 0
    assert _queue(support) == events


def test_a_consumer_at_the_start_or_at_a_gone_event_keeps_everything(caplog):
    support = Support.objects.create()
    events = _publish(support, 5)
    Processor().run_once()
    api = get_client()
    fresh = _register(support, "fresh", "")
    assert retention.prune(api, support, keep=0) == 0
    fresh.hwm = "msg_gone00000000000000000000"  # the event it names was removed: it rereads from the oldest
    fresh.save()
    assert retention.prune(api, support, keep=0) == 0
    assert _queue(support) == events

    api.beta.threads.delete(fresh.id)  # the directory names a thread that is gone: it holds nothing back
    assert retention.prune(api, support, keep=0) == 4
    assert "consumer fresh's position thread" in caplog.text
    assert _queue(support) == events[4:]


def test_maybe_prune_honours_the_schedule(settings):
    support = Support.objects.create()
    events = _publish(support, 4)
    Processor().run_once()
    api = get_client()
    settings.BETAASSI_QUEUE_KEEP = 1
    settings.BETAASSI_QUEUE_PRUNE_SECONDS = 0
    assert retention.maybe_prune(api, support) == 0  # 0: never
    settings.BETAASSI_QUEUE_PRUNE_SECONDS = 3600
    assert retention.maybe_prune(api, support) == 3
    more = _publish(support, 2, start=4)
    Processor().run_once()
    assert retention.maybe_prune(api, support) == 0  # pruned less than an hour ago
    assert _queue(support) == [events[3], *more]


def test_the_command_prunes_the_queues_this_deployment_owns(capsys):
    ours, theirs = Support.objects.create(), Support.objects.create()
    _publish(ours, 5)
    _publish(theirs, 5)
    api = get_client()
    api.beta.assistants.update(theirs.id, metadata={**theirs.metadata, OWNER_KEY: "elsewhere"})
    Processor(assistant_ids=[ours.id]).run_once()

    call_command("prune_publish_queue", "--keep", "2", "--dry-run")
    assert capsys.readouterr().out == (f"assistant {ours.id}: would remove 3 event(s)\n"
                                       "would remove 3 event(s) of 1 queue(s)\n")
    assert len(_queue(ours)) == 5
    call_command("prune_publish_queue", "--keep", "2")
    assert capsys.readouterr().out == f"assistant {ours.id}: removed 3 event(s)\nremoved 3 event(s) of 1 queue(s)\n"
    assert len(_queue(ours)) == 2
    call_command("prune_publish_queue", "--assistant", theirs.id, "--keep", "0")  # named: any owner
    assert capsys.readouterr().out == (f"assistant {theirs.id}: removed 0 event(s)\n"
                                       "removed 0 event(s) of 1 queue(s)\n")
    assert len(_queue(theirs)) == 5  # nothing applied there yet


def test_a_real_consumer_goes_on_after_retention_without_missing_anything(processor):
    support = Support.objects.create()
    ids = [support.publish("order.created", {"n": n}) for n in range(6)]
    with support.consumer("billing", batch_size=3) as billing:  # registered through the processor
        assert [e.id for e in billing.poll()] == ids[:3]
        billing.commit()
    api = get_client()
    assert retention.positions(api, support)["billing"] == ids[2]
    assert retention.prune(api, support, keep=0) == 2
    with support.consumer("billing") as billing:
        assert [e.id for e in billing.poll()] == ids[3:]
        assert billing.behind == []


def test_the_command_refuses_a_negative_keep_and_an_unknown_assistant():
    with pytest.raises(CommandError, match="--keep -1: must not be negative"):
        call_command("prune_publish_queue", "--keep", "-1")
    with pytest.raises(CommandError, match="no such assistant"):
        call_command("prune_publish_queue", "--assistant", "asst_unknown")
