"""Sessions through the publish queue, end to end on the embedded backend."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command

from betaassi_django.client import get_client
from betaassi_django.models import PublishedEvent, Session
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice", password="x")


def test_sessions_are_applied_in_order(user, capsys):
    support = Support.objects.create(tier=1)
    support.sessions.create("session-id1", owner=user)
    support.sessions.create("many", owner=user.pk, kind="manyshots", context_messages=3, model="m-1")
    support.sessions.update("session-id1", kind="oneshot")
    support.sessions.delete("many")
    support.sessions.create("session-id1", owner=user)  # exists: a no-op, recorded as such
    assert support.sessions.get("session-id1") is None  # published, not applied yet

    call_command("process_publish_queue", "--once")
    assert "processed 5 event(s)" in capsys.readouterr().out

    session = support.sessions.get("session-id1")
    assert (session.owner, session.kind, session.revision) == (user, "oneshot", 1)
    assert session.thread_id.startswith("thread_")
    assert support.sessions.get("many") is None
    assert [s.session_id for s in support.sessions.list()] == ["session-id1"]
    statuses = list(PublishedEvent.objects.order_by("processed_at").values_list("op", "status"))
    assert statuses == [("session.create", "applied"), ("session.create", "applied"), ("session.update", "applied"),
                        ("session.delete", "applied"), ("session.create", "noop")]
    mirror = Session.objects.get(assistant_id=support.id, session_id="session-id1")
    assert (mirror.owner, mirror.kind, mirror.revision) == (user, "oneshot", 1)
    assert not Session.objects.filter(session_id="many").exists()
    assert Processor().run_once() == 0  # the high water mark moved: nothing is pending


def test_bad_events_are_recorded_and_passed(user):
    support = Support.objects.create()
    queue = support.metadata[PUBLISH_KEY]
    api = get_client()
    api.beta.threads.messages.create(queue, role="user", content="not json at all")
    api.beta.threads.messages.create(queue, role="user", content=json.dumps({"v": 1, "op": "session.fly"}))
    support.sessions.create("after", owner=user)
    Processor().run_once()
    assert list(PublishedEvent.objects.order_by("processed_at").values_list("status", "reason")) == [
        ("rejected", "not valid JSON"), ("rejected", "unknown op 'session.fly'"), ("applied", "")]
    assert support.sessions.get("after").owner_id == user.pk


def test_arguments_are_validated_before_publishing(user):
    support = Support.objects.create()
    for call, field in [
        (lambda: support.sessions.create("bad id!", owner=user), "session_id"),
        (lambda: support.sessions.create("s", owner=user, kind="sometimes"), "kind"),
        (lambda: support.sessions.create("s", owner=user, kind="manyshots", context_messages=0), "context_messages"),
        (lambda: support.sessions.create("s", owner=None), "owner"),
    ]:
        with pytest.raises(ValidationError) as info:
            call()
        assert field in info.value.message_dict
    assert get_client().beta.threads.messages.list(support.metadata[PUBLISH_KEY]).data == []


def test_set_attr_goes_through_the_queue(user):
    support = Support.objects.create(tier=1)
    support.queue.set_attr("tier", 4)
    assert Support.retrieve(support.id).tier == 1
    Processor().run_once()
    assert Support.retrieve(support.id).tier == 4
    with pytest.raises(ValidationError):
        support.queue.set_attr("nope", 1)


def test_deleting_the_assistant_deletes_its_queue(user):
    import openai

    support = Support.objects.create()
    support.sessions.create("s1", owner=user)
    Processor().run_once()
    session_thread = support.sessions.get("s1").thread_id
    queue = support.metadata[PUBLISH_KEY]
    support.delete()
    for thread_id in (queue, session_thread):
        with pytest.raises(openai.NotFoundError):
            get_client().beta.threads.retrieve(thread_id)


def test_the_registry_grows_and_batches_stay_cheap(user):
    """400 sessions: pages double as the registry fills; each session is found in two reads."""
    from betaassi_django.client import build_client, use_clients
    from betaassi_django.publishing.backend import REGISTRY_KEY, load_registry
    from tests.spec import ValidatingTransport

    support = Support.objects.create()
    for index in range(400):
        # The updates below keep each record's size (m00 to m99): a batch that lengthened them could tip a table
        # just under its target load into a doubling (it did at three-digit user ids), which is not this test's.
        support.sessions.create(f"s-{index:04d}", owner=user, model="m00")
    Processor().run_once()
    _, pages = load_registry(get_client(), support.metadata[REGISTRY_KEY])
    assert len(pages) >= 4 and sum(len(p.sessions) for p in pages) == 400

    transports = []
    counting = build_client(max_retries=0, wrap_transport=lambda t: transports.append(ValidatingTransport(t, "x"))
                            or transports[-1])
    with use_clients(counting):
        assert support.sessions.get("s-0399").owner_id == user.pk
        assert [m for m, _ in transports[0].requests] == ["GET", "GET"]  # the root, then one page
        transports[0].requests.clear()
        for index in range(100):
            support.sessions.update(f"s-{index % 2:04d}", model=f"m{index:02d}")  # two sessions, one or two pages
        transports[0].requests.clear()
        Processor(assistant_ids=[support.id]).run_once()
    calls = [(m, p.rsplit("/", 1)[-1]) for m, p in transports[0].requests]
    listing = [c for c in calls if c[0] == "GET" and c[1] == "messages"]
    writes = [c for c in calls if c[0] == "POST"]
    assert len(listing) == 2  # the batch of 100, then the empty list that ends the drain
    assert 2 <= len(writes) <= 3  # the changed page(s) and the root
    assert support.sessions.get("s-0001").model == "m99" and support.sessions.get("s-0000").revision == 50


@pytest.mark.parametrize(("kind", "count", "contexts"), [
    ("default", None, [1, 3, 5]),
    ("oneshot", None, [1, 1, 1]),
    ("manyshots", 2, [1, 2, 2]),
    ("manyshots", 4, [1, 3, 4]),
])
def test_ask_honours_the_session_kind(user, kind, count, contexts):
    support = Support.objects.create(model="echo")
    support.sessions.create("chat", owner=user, kind=kind, context_messages=count)
    Processor().run_once()
    session = support.sessions.get("chat")
    replies = [session.ask(f"turn {n}") for n in range(3)]
    assert replies == [f"echo: turn {n} [context={c}]" for n, c in enumerate(contexts)]
    assert Session.objects.get(session_id="chat").touched_at is not None


async def test_astream_yields_the_reply_in_deltas(user):
    from asgiref.sync import sync_to_async

    support = await Support.objects.acreate()
    await sync_to_async(support.sessions.create)("s", owner=user, kind="oneshot")
    await sync_to_async(Processor().run_once)()
    session = await sync_to_async(support.sessions.get)("s")
    deltas = [delta async for delta in session.astream("hello there")]
    assert deltas == ["echo: ", "hello ", "there ", "[context=1]"]



async def test_astream_raises_after_its_text_when_the_run_does_not_complete(user, settings):
    """As ``ask`` does: here the session's thread is deleted while the reply streams (the run's stream ends with
    an ``error`` event), and the generator raises once the text it had is out, rather than just stopping."""
    from asgiref.sync import sync_to_async

    from betaassi_django.client import get_async_client

    settings.BETAASSI_ECHO_DELAY = 0.05
    support = await Support.objects.acreate()
    await sync_to_async(support.sessions.create)("s", owner=user, kind="oneshot")
    await sync_to_async(Processor().run_once)()
    session = await sync_to_async(support.sessions.get)("s")
    deltas = []
    with pytest.raises(RuntimeError) as caught:
        async for delta in session.astream("m0" + " word" * 40):
            deltas.append(delta)
            if len(deltas) == 2:
                await get_async_client().beta.threads.delete(session.thread_id)
    run_id = str(caught.value).split()[1]
    assert str(caught.value) == f"run {run_id} ended without an end event: Run {run_id} was deleted while executing."
    assert deltas[:2] == ["echo: ", "m0 "] and len(deltas) < 42

@pytest.mark.heavy
def test_ten_thousand_sessions_on_one_assistant(user):
    """The registry holds 10,000 sessions; finding any one costs two backend reads."""
    from betaassi_django.client import build_client, use_clients
    from betaassi_django.publishing.backend import REGISTRY_KEY, load_registry
    from betaassi_django.publishing.events import Event
    from betaassi_django.publishing.publisher import publish
    from tests.spec import ValidatingTransport

    support = Support.objects.create()
    for index in range(10_000):
        publish(support, Event("session.create", f"user-{index:05d}", {"owner": user.pk, "kind": "default"}))
    assert Processor().run_once() == 10_000
    _, pages = load_registry(get_client(), support.metadata[REGISTRY_KEY])
    assert sum(len(p.sessions) for p in pages) == 10_000 and len(pages) >= 64  # grown by doubling

    transports = []
    counting = build_client(max_retries=0, wrap_transport=lambda t: transports.append(ValidatingTransport(t, "x"))
                            or transports[-1])
    with use_clients(counting):
        for index in (0, 4_999, 9_999):
            transports[0].requests.clear()
            assert support.sessions.get(f"user-{index:05d}").owner_id == user.pk
            # The root, then the bucket's head; once the root is kept, the head alone.
            assert [m for m, _ in transports[0].requests] == (["GET", "GET"] if index == 0 else ["GET"])


def test_wait_blocks_until_a_processor_applied_the_event(user):
    import threading

    from betaassi_django.publishing import notify

    support = Support.objects.create()
    stop = threading.Event()

    def processor_thread() -> None:
        from django.db import connection

        processor = Processor(assistant_ids=[support.id])
        try:
            while not stop.is_set():
                notify.local_wake.clear()
                processor.run_once()
                notify.local_wake.wait(5)  # only a wake-up can make this quick
        finally:
            connection.close()

    worker = threading.Thread(target=processor_thread)
    worker.start()
    try:
        started = time.monotonic()
        support.sessions.create("waited", owner=user, wait=True)
        assert time.monotonic() - started < 4  # woken, not polled
        assert Session.objects.filter(session_id="waited").exists()
    finally:
        stop.set()
        notify.local_wake.set()
        worker.join()
    with pytest.raises(TimeoutError):  # no processor runs now
        support.sessions.create("never", owner=user, wait=True, timeout=0.3)


def test_wait_and_its_async_twin_return_the_recorded_outcome(user):
    """``sessions.wait`` and ``await sessions.await_`` are the same loop: the event's record once the processor
    wrote it (status and reason), ``TimeoutError`` naming the event before."""
    from asgiref.sync import async_to_sync

    support = Support.objects.create()
    created = support.sessions.create("s", owner=user)
    again = support.sessions.create("s", owner=user)
    for waiting in (support.sessions.wait, async_to_sync(support.sessions.await_)):
        with pytest.raises(TimeoutError) as raised:
            waiting(created, timeout=0.05)
        assert str(raised.value) == (f"event {created} was not processed within 0.05s; is process_publish_queue "
                                     "running?")
    Processor(assistant_ids=[support.id]).run_once()
    for waiting in (support.sessions.wait, async_to_sync(support.sessions.await_), support.queue.wait):
        assert (waiting(created).status, waiting(created).reason) == ("applied", "")
        assert (waiting(again).status, waiting(again).reason) == ("noop", "the session exists")


def test_other_processes_follow_the_queue_from_a_cursor(user):
    from betaassi_django.publishing.events import Rejected

    support = Support.objects.create()
    first = support.sessions.create("a", owner=user)
    support.sessions.update("a", model="m2")
    get_client().beta.threads.messages.create(support.metadata["betaassi_publish"], role="user", content="junk")
    events = list(support.queue.events())
    assert [e.op if not isinstance(e, Rejected) else "rejected" for _, e in events] == [
        "session.create", "session.update", "rejected"]
    after_first = list(support.queue.events(after=first))
    assert [event_id for event_id, _ in after_first] == [event_id for event_id, _ in events[1:]]
    assert after_first[0][1].args == {"model": "m2"}


def test_applied_events_are_broadcast_over_redis(user, settings):
    """With channels-redis, the processor announces applied events to the assistant's group."""
    import asyncio

    from channels.layers import channel_layers, get_channel_layer

    from betaassi_django.groups import assistant_group

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}
    channel_layers.backends.clear()
    support = Support.objects.create()
    layer = get_channel_layer()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(assistant_group(support.id), channel)
        return channel

    async def receive(channel: str) -> dict:
        return await asyncio.wait_for(layer.receive(channel), 10)

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(join())
        event_id = support.sessions.create("told", owner=user)
        Processor(assistant_ids=[support.id]).run_once()
        message = loop.run_until_complete(receive(channel))
    finally:
        loop.close()
        channel_layers.backends.clear()
    assert message["type"] == "publish.applied" and message["assistant"] == support.id
    assert message["events"] == [{"event_id": event_id, "op": "session.create", "session_id": "told",
                                  "status": "applied"}]
