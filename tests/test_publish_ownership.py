"""Ownership: a new assistant names the deployment that owns its queue; a processor applies only the assistants
its deployment owns and hands the others to its follower (docs/deployment.md)."""

from __future__ import annotations

import datetime
import json
import logging

import pytest
from django.core.exceptions import ValidationError

from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.metadata import OWNER_KEY, PUBLISH_KEY
from betaassi_django.models import PublishedEvent, PublishState, Session
from betaassi_django.publishing.follower import Follower
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import DEFAULTS, Kitchen, Support

#: Every Kitchen field set: twelve metadata keys.
FULL = {**DEFAULTS, "text": "t", "short": "s", "count": 1, "flag": True, "ratio": 0.5, "data": [1],
        "moment": DEFAULTS["moment"], "span": datetime.timedelta(seconds=1), "color": "green"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(settings):
    """An assistant created by the deployment "shop", then this process back in the deployment "default"."""
    settings.BETAASSI_DEPLOYMENT = "shop"
    support = Support.objects.create(tier=2)
    settings.BETAASSI_DEPLOYMENT = "default"
    return support


def bodies(assistant) -> list[dict]:
    listed = get_client().beta.threads.messages.list(assistant.metadata[PUBLISH_KEY], order="asc")
    return [json.loads(text_of(m)) for m in listed]


def test_a_new_assistant_names_its_owner_only_outside_the_default(settings, shop):
    assert shop.metadata[OWNER_KEY] == "shop"
    assert OWNER_KEY not in Support.objects.create().metadata
    shop.tier = 3
    shop.save()  # saved from another deployment: the owner stays
    assert get_client().beta.assistants.retrieve(shop.id).metadata[OWNER_KEY] == "shop"
    assert Support.retrieve(shop.id).tier == 3
    settings.BETAASSI_DEPLOYMENT = "shop"
    full = Kitchen.objects.create(**FULL)  # twelve fields and four reserved keys: exactly sixteen
    assert len(full.metadata) == 16 and full.metadata[OWNER_KEY] == "shop"


def test_the_owner_key_is_reserved(settings):
    assert OWNER_KEY in Support.reserved_keys()
    settings.BETAASSI_DEPLOYMENT = "shop"
    with pytest.raises(ValidationError) as info:
        Kitchen.objects.create(**{**FULL, "text": "t" * 513})  # one key more than the sixteen
    assert list(info.value.message_dict) == ["text"]


def test_a_processor_applies_only_what_its_deployment_owns(settings, shop, alice, caplog):
    here = Support.objects.create()
    theirs = [shop.sessions.create("s1", owner=alice), shop.publish("order.created", {"n": 1})]
    ours = here.sessions.create("s1", owner=alice)
    with caplog.at_level(logging.DEBUG, logger="betaassi_django.publishing"):
        assert Processor().run_once() == 1
        assert Processor(assistant_ids=[shop.id, here.id]).run_once() == 0  # asked for by id: still not ours
    assert list(PublishedEvent.objects.values_list("event_id", "status")) == [(ours, "applied")]
    assert f"lease acquired assistant={here.id}" in caplog.text
    assert f"lease acquired assistant={shop.id}" not in caplog.text
    assert shop.sessions.get("s1") is None
    assert [b["op"] for b in bodies(shop)] == ["session.create", "app.event"]  # no follower: nothing published

    settings.BETAASSI_DEPLOYMENT = "shop"
    assert Processor().run_once() == 2
    assert dict(PublishedEvent.objects.filter(event_id__in=theirs).values_list("event_id", "status")) == {
        theirs[0]: "applied", theirs[1]: "passed"}
    assert shop.sessions.get("s1").owner_id == alice.pk
    assert here.sessions.get("s1").owner_id == alice.pk


def test_the_follower_follows_the_others(settings, shop, alice):
    """In "default", the processor's follower registers ``betaassi.mirror.default`` on the shop's queue; once the
    shop applied it, the follower copies what the owner applied into this deployment's tables."""
    follower = Follower("here")
    processor = Processor(holder="here", follower=follower)
    try:
        assert processor.run_once() == 0
        [register] = bodies(shop)
        assert (register["op"], register["args"]["name"]) == ("consumer.register", "betaassi.mirror.default")
        registered = get_client().beta.threads.messages.list(shop.metadata[PUBLISH_KEY]).data[0].id
        settings.BETAASSI_DEPLOYMENT = "shop"
        made = shop.sessions.create("s1", owner=alice)
        assert Processor(holder="shop").run_once() == 2
        PublishedEvent.objects.all().delete()  # one database here: forget what the shop's processor recorded
        Session.objects.all().delete()
        settings.BETAASSI_DEPLOYMENT = "default"
        processor.run_once()
        processor.run_once()
        assert list(PublishedEvent.objects.order_by("event_id").values_list("event_id", "status")) == sorted([
            (registered, "applied"), (made, "applied")])  # from the root's hwm when it registered: the start
        assert list(Session.objects.values_list("assistant_id", "session_id", "owner_id")) == [
            (shop.id, "s1", alice.pk)]
    finally:
        follower.close()


def test_a_failing_follower_holds_up_no_one(settings, shop, alice):
    """The shop's publish thread is gone: following it fails, is recorded and backed off; ours still applies."""
    get_client().beta.threads.delete(shop.metadata[PUBLISH_KEY])
    here = Support.objects.create()
    ours = here.sessions.create("s1", owner=alice)
    follower = Follower("here")
    processor = Processor(holder="here", follower=follower)
    try:
        assert processor.run_once() == 1
    finally:
        follower.close()
    assert list(PublishedEvent.objects.values_list("event_id", "status")) == [(ours, "applied")]
    state = PublishState.objects.get(assistant_id=shop.id)
    assert state.failures == 1 and state.last_error.startswith("NotFoundError")
    assert processor.failed == {shop.id: state.last_error}
