"""consumer.register / consumer.unregister: the processor keeps the consumer directory on the publish thread, in
order, under its lease, and accepts only a position thread made for that consumer of that assistant."""

from __future__ import annotations

import logging

import openai
import pytest

from betaassi_django.client import get_client
from betaassi_django.metadata import PUBLISH_KEY, REGISTRY_KEY
from betaassi_django.models import PublishedEvent, StreamThread
from betaassi_django.publishing import directory, publisher
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.registry.root import Root
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def position(support, name: str) -> str:
    return StreamThread.objects.create(consumer=name, assistant_id=support.id).id


def register(support, name: str, thread_id: str) -> str:
    return publisher.publish(support, Event("consumer.register", None, {"name": name, "thread_id": thread_id}))


def unregister(support, name: str) -> str:
    return publisher.publish(support, Event("consumer.unregister", None, {"name": name}))


def outcome(event_id: str) -> tuple[str, str]:
    record = PublishedEvent.objects.get(event_id=event_id)
    return record.status, record.reason


def verdict(support, event_id: str) -> dict:
    return dict(get_client().beta.threads.messages.retrieve(event_id, thread_id=support.metadata[PUBLISH_KEY]).metadata)


def publish_metadata(support) -> dict:
    return dict(get_client().beta.threads.retrieve(support.metadata[PUBLISH_KEY]).metadata)


def exists(thread_id: str) -> bool:
    try:
        get_client().beta.threads.retrieve(thread_id)
    except openai.NotFoundError:
        return False
    return True


def test_register_then_unregister(backend):
    support = Support.objects.create()
    billing = position(support, "billing")
    first = register(support, "billing", billing)
    same = register(support, "billing", billing)  # the same thread again: applied, nothing changes
    assert Processor().run_once() == 2
    assert (outcome(first), outcome(same)) == (("applied", ""), ("applied", ""))
    assert publish_metadata(support) == {"betaassi_type": "betaassi.publish", "consumer:billing": billing}
    assert verdict(support, first) == {"betaassi_event": "consumer.register"}

    gone = unregister(support, "billing")
    absent = unregister(support, "billing")
    Processor().run_once()
    assert (outcome(gone), outcome(absent)) == (("applied", ""), ("noop", "consumer 'billing' is not registered"))
    assert verdict(support, absent) == {"betaassi_event": "consumer.unregister", "betaassi_status": "noop",
                                        "betaassi_reason": "consumer 'billing' is not registered"}
    assert publish_metadata(support) == {"betaassi_type": "betaassi.publish"}
    assert not exists(billing)  # the position thread goes with its registration


def test_a_name_already_registered_keeps_its_thread():
    support = Support.objects.create()
    winner, loser = position(support, "billing"), position(support, "billing")
    register(support, "billing", winner)
    late = register(support, "billing", loser)
    Processor().run_once()
    assert outcome(late) == ("noop", f"registered with {winner}")
    assert verdict(support, late) == {"betaassi_event": "consumer.register", "betaassi_status": "noop",
                                      "betaassi_reason": f"registered with {winner}"}
    assert directory.read(get_client(), support.metadata[PUBLISH_KEY]) == {"billing": winner}
    assert exists(loser)  # the registering process deletes its own thread and uses the winner's


def test_only_a_position_thread_made_for_that_consumer_of_that_assistant_is_accepted():
    support, other = Support.objects.create(), Support.objects.create()
    api = get_client()
    plain = api.beta.threads.create(metadata={"consumer": "billing", "assistant_id": support.id}).id
    cases = {
        "missing": ("thread_doesnotexist", "thread thread_doesnotexist does not exist"),
        "plain": (plain, f"thread {plain} is not a betaassi_django.StreamThread"),
        "renamed": (position(support, "shipping"),
                    "thread {} keeps the position of another consumer, not 'renamed'"),
        "foreign": (position(other, "foreign"), "thread {} follows another assistant's queue"),
        "registry": (support.metadata[REGISTRY_KEY], "thread {} is not a betaassi_django.StreamThread"),
    }
    events = {name: register(support, name, thread_id) for name, (thread_id, _) in cases.items()}
    Processor().run_once()
    for name, (thread_id, reason) in cases.items():
        assert outcome(events[name]) == ("rejected", reason.format(thread_id))
        assert verdict(support, events[name])["betaassi_reason"] == reason.format(thread_id)
    assert publish_metadata(support) == {"betaassi_type": "betaassi.publish"}
    assert all(exists(thread_id) for thread_id, _ in cases.values() if thread_id != "thread_doesnotexist")


def test_the_directory_holds_fifteen_consumers():
    support = Support.objects.create()
    names = [f"c{i:02d}" for i in range(directory.MAX_CONSUMERS + 1)]
    threads = {name: position(support, name) for name in names}
    events = {name: register(support, name, threads[name]) for name in names}
    Processor().run_once()
    assert [outcome(events[name])[0] for name in names] == ["applied"] * 15 + ["rejected"]
    assert outcome(events[names[-1]])[1] == "the queue already has 15 consumers, the most it can hold"
    assert directory.read(get_client(), support.metadata[PUBLISH_KEY]) == {n: threads[n] for n in names[:15]}
    unregister(support, names[0])
    again = register(support, names[-1], threads[names[-1]])
    Processor().run_once()
    assert outcome(again) == ("applied", "")
    assert set(directory.read(get_client(), support.metadata[PUBLISH_KEY])) == set(names[1:])


def test_one_batch_applies_registrations_in_order():
    support = Support.objects.create()
    first, second = position(support, "billing"), position(support, "billing")
    events = [register(support, "billing", first), unregister(support, "billing"),
              register(support, "billing", second), unregister(support, "nobody")]
    assert Processor().run_once() == 4
    assert [outcome(e)[0] for e in events] == ["applied", "applied", "applied", "noop"]
    assert publish_metadata(support) == {"betaassi_type": "betaassi.publish", "consumer:billing": second}
    assert (exists(first), exists(second)) == (False, True)


def test_unregister_never_deletes_a_thread_made_for_something_else(caplog):
    """A directory entry written by hand names a session's thread: the entry goes, the thread stays."""
    support = Support.objects.create()
    api = get_client()
    stranger = api.beta.threads.create(metadata={"note": "not a position"}).id
    api.beta.threads.update(support.metadata[PUBLISH_KEY], metadata={**publish_metadata(support),
                                                                      "consumer:odd": stranger})
    event_id = unregister(support, "odd")
    with caplog.at_level(logging.WARNING, logger="betaassi_django.publishing"):
        Processor().run_once()
    assert outcome(event_id) == ("applied", "")
    assert publish_metadata(support) == {"betaassi_type": "betaassi.publish"}
    assert exists(stranger)
    assert f"not deleting {stranger} (not the position thread of consumer 'odd')" in caplog.text


def test_a_registration_replayed_after_an_interrupted_commit_applies_once():
    """The process died after writing the directory and before the root: the event is read again."""
    support = Support.objects.create()
    billing = position(support, "billing")
    event_id = register(support, "billing", billing)
    api, root_id = get_client(), support.metadata[REGISTRY_KEY]
    before = dict(api.beta.threads.retrieve(root_id).metadata)
    Processor().run_once()
    assert Root.from_metadata(root_id, dict(api.beta.threads.retrieve(root_id).metadata)).hwm == event_id
    api.beta.threads.update(root_id, metadata=before)  # the root write never happened
    PublishedEvent.objects.all().delete()
    assert Processor().run_once() == 1
    assert outcome(event_id) == ("applied", "")
    assert directory.read(api, support.metadata[PUBLISH_KEY]) == {"billing": billing}
    assert verdict(support, event_id) == {"betaassi_event": "consumer.register"}


def test_assistant_consumer_follows_one_assistant_and_the_class_consumer_all():
    """``assistant.consumer(name)`` and ``Support.consumer(name)``: the descriptor hands each its target (their
    positions registered beforehand, as ``register`` would, so no background processor is needed)."""
    first, second = Support.objects.create(), Support.objects.create()
    ids = [first.publish("order.created", {"n": 1}), second.publish("order.created", {"n": 2})]
    register(first, "billing", position(first, "billing"))
    for support in (first, second):
        register(support, "audit", position(support, "audit"))
    Processor().run_once()
    with first.consumer("billing") as one:
        assert (one.assistant_ids, one.assistant_class) == ([first.id], None)
        assert [(e.id, e.type, e.data) for e in one.poll()] == [(ids[0], "order.created", {"n": 1})]
    with Support.consumer("audit") as every:
        assert (every.assistant_ids, every.assistant_class) == (None, "testapp.Support")
        seen = [e.id for _ in range(4) for e in every.poll()]  # one assistant's batch per poll, then none
        assert sorted(seen) == sorted(ids)
