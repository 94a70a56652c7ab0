"""The mirror follower in one process: the deployment is switched between the owner's processor ("host") and the
follower ("shop"), one database playing both (each side's tables are emptied where it matters)."""

from __future__ import annotations

import openai
import pytest
from django.contrib.auth import get_user_model

from betaassi_django.client import get_client
from betaassi_django.models import ConsumerLease, PublishedEvent, Session
from betaassi_django.publishing import directory, retention
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.follower import Follower
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _as(settings, deployment: str) -> None:
    settings.BETAASSI_DEPLOYMENT = deployment


def _registrations(support: Support, arg: str = "name") -> list[str]:
    return [e.args[arg] for _, e in support.queue.events() if getattr(e, "op", None) == "consumer.register"]


def test_the_follower_registers_once_without_blocking_then_records_what_the_owner_applied(settings):
    user = get_user_model().objects.create_user("alice")
    _as(settings, "host")
    support = Support.objects.create()
    support.sessions.create("early", owner=user)
    Processor().run_once()
    PublishedEvent.objects.all().delete()  # the shop's own tables start empty (one database plays both here)
    Session.objects.all().delete()

    _as(settings, "shop")
    follower = Follower("shop-1")
    assert [follower.follow(support) for _ in range(3)] == [0, 0, 0]  # the owner has not applied it yet
    assert _registrations(support) == ["betaassi.mirror.shop"]
    assert list(Session.objects.values_list("session_id", "owner_id")) == [("early", user.pk)]  # copied at once

    _as(settings, "host")
    Processor().run_once()
    _as(settings, "shop")
    assert follower.follow(support) == 1  # its own registration, the first event after its start
    event_id = support.sessions.create("late", owner=user, model="m-1")
    assert follower.interval(1.0) == 1.0  # not yet known to wait: the next pass looks
    assert follower.follow(support) == 0
    assert follower.interval(1.0) == 0.1  # woken by that publish, waiting for the owner: poll fast

    _as(settings, "host")
    Processor().run_once()
    PublishedEvent.objects.filter(event_id=event_id).delete()
    Session.objects.filter(session_id="late").delete()
    _as(settings, "shop")
    assert follower.follow(support) == 1
    assert follower.interval(1.0) == 1.0
    assert PublishedEvent.objects.get(event_id=event_id).status == "applied"
    assert Session.objects.get(session_id="late").model == "m-1"

    other = Follower("shop-2")
    assert other.follow(support) == 0
    assert ConsumerLease.objects.get(consumer="betaassi.mirror.shop").holder == "shop-1"
    follower.close()
    assert other.follow(support) == 0
    assert ConsumerLease.objects.get(consumer="betaassi.mirror.shop").holder == "shop-2"
    assert retention.positions(get_client(), support)["betaassi.mirror.shop"] == event_id
    other.close()


def test_a_refused_registration_is_not_published_again_every_pass(settings):
    _as(settings, "host")
    support = Support.objects.create()
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    metadata = api.beta.threads.retrieve(publish_id).metadata
    for index in range(directory.MAX_CONSUMERS):
        metadata = directory.with_consumer(metadata, f"c{index}", f"thread_{index}")
    api.beta.threads.update(publish_id, metadata=metadata)

    _as(settings, "shop")
    follower = Follower("shop-1")
    assert follower.follow(support) == 0
    [thread_id] = _registrations(support, "thread_id")
    _as(settings, "host")
    Processor().run_once()
    _as(settings, "shop")
    assert [follower.follow(support) for _ in range(3)] == [0, 0, 0]
    assert _registrations(support) == ["betaassi.mirror.shop"]
    with pytest.raises(openai.NotFoundError):
        api.beta.threads.retrieve(thread_id)  # its position thread went with the refusal
    follower.close()


def test_a_follower_whose_position_was_removed_copies_the_registry_again(settings):
    user = get_user_model().objects.create_user("alice")
    _as(settings, "host")
    support = Support.objects.create()
    _as(settings, "shop")
    follower = Follower("shop-1")
    follower.follow(support)
    _as(settings, "host")
    Processor().run_once()
    _as(settings, "shop")
    assert follower.follow(support) == 1  # at its registration now
    _as(settings, "host")
    support.sessions.create("missed", owner=user)
    kept = support.sessions.create("kept", owner=user)
    Processor().run_once()
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    for event_id, _ in list(support.queue.events())[:-1]:  # past its position, up to the root's (retention never
        api.beta.threads.messages.delete(event_id, thread_id=publish_id)  # would: it keeps every position)
    after = support.sessions.create("after", owner=user)
    Processor().run_once()
    Session.objects.all().delete()
    PublishedEvent.objects.all().delete()
    _as(settings, "shop")
    assert follower.follow(support) == 2
    assert sorted(Session.objects.values_list("session_id", flat=True)) == ["after", "kept", "missed"]
    assert sorted(PublishedEvent.objects.values_list("event_id", "status")) == sorted([(kept, "applied"),
                                                                                      (after, "applied")])
    follower.close()
