"""Durable queue consumers in one process: order, positions, filters, classes, start, retention, async, wake-ups.

The processor runs beside them (the ``processor`` fixture): it applies each consumer's registration.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from django.contrib.auth import get_user_model

from betaassi_django.client import get_client
from betaassi_django.metadata import PUBLISH_KEY
from betaassi_django.models import StreamThread
from betaassi_django.publishing import directory
from betaassi_django.publishing.consumer import Consumer
from betaassi_django.publishing.positions import register
from betaassi_django.publishing.queue_event import QueueEvent
from tests.testapp.models import Kitchen, Support

pytestmark = pytest.mark.django_db(transaction=True)


def _queue(assistant) -> list[str]:
    """Every event id of the assistant's queue, in order."""
    return [event_id for event_id, _ in assistant.queue.events()]


def _take(consumer: Consumer, count: int, timeout: float = 20) -> list[QueueEvent]:
    """The first ``count`` events the consumer iterates (it commits each batch it is asked past)."""
    seen: list[QueueEvent] = []
    for event in consumer.events(timeout=timeout):
        seen.append(event)
        if len(seen) == count:
            break
    return seen


def test_events_come_in_queue_order_across_two_publishers_with_stable_ids(processor):
    support = Support.objects.create()
    owner = get_user_model().objects.create_user("orders")

    def publisher(name: str) -> None:
        from django.db import connection

        try:
            for n in range(15):
                support.publish("order.created", {"by": name, "n": n})
        finally:
            connection.close()

    threads = [threading.Thread(target=publisher, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    support.sessions.create("s1", owner=owner)
    for thread in threads:
        thread.join()
    with Consumer("billing", assistant_ids=[support.id], batch_size=7) as billing:
        seen = _take(billing, 31)
        billing.commit()
        (billing_position,) = billing.positions().values()
    queue = _queue(support)
    assert [e.id for e in seen] == queue[:-1]  # the last is its own registration, passed over, not handed out
    assert billing_position == seen[-1].id  # left after the last event it handed out
    for name in ("a", "b"):
        assert [e.data["n"] for e in seen if e.type == "order.created" and e.data["by"] == name] == list(range(15))
    created = [e for e in seen if e.op == "session.create"]
    assert [(e.type, e.session_id, e.data["owner"], e.assistant_id) for e in created] == [
        ("session.create", "s1", owner.pk, support.id)]
    assert {e.op for e in seen} == {"app.event", "session.create"}
    assert {e.status for e in seen} == {None}


def test_poll_and_commit_keep_the_position_and_uncommitted_events_come_again(processor):
    support = Support.objects.create()
    register(get_client(), support, "ticks")  # first: its registration event is not among these
    ids = [support.publish("tick", {"n": n}) for n in range(5)]
    first = Consumer("ticks", assistant_ids=[support.id], batch_size=3)
    try:
        batch = first.poll()  # three messages listed: its registration (passed over) and two events
        assert [(e.id, e.type, e.data) for e in batch] == [(ids[n], "tick", {"n": n}) for n in range(2)]
        assert first.positions() == {support.id: ""}  # registered, nothing committed yet
        first.commit()
        assert first.positions() == {support.id: ids[1]}
        assert [e.id for e in first.poll()] == ids[2:]  # read on, not committed
        assert first.poll() == []
    finally:
        first.close()
    with Consumer("ticks", assistant_ids=[support.id]) as again:
        assert [e.id for e in again.poll()] == ids[2:]  # the same events, the same ids
        again.commit()
        assert again.positions() == {support.id: ids[4]}
    # The position lives in the StreamThread the publish thread's directory names.
    thread_id = directory.read(get_client(), support.metadata[PUBLISH_KEY])["ticks"]
    position = StreamThread.retrieve(thread_id)
    assert (position.consumer, position.assistant_id, position.hwm) == ("ticks", support.id, ids[4])
    assert position.metadata["betaassi_type"] == "betaassi_django.StreamThread"


def test_the_types_filter_hands_out_matching_events_and_passes_the_others(processor):
    support = Support.objects.create()
    register(get_client(), support, "orders")
    ids = [support.publish(kind, {"n": n}) for n, kind in enumerate(
        ["order.created", "user.signup", "order.paid", "invoice.sent", "user.left"])]
    with Consumer("orders", assistant_ids=[support.id], types=["order.*", "invoice.sent"]) as orders:
        assert [(e.id, e.type) for e in orders.poll()] == [
            (ids[0], "order.created"), (ids[2], "order.paid"), (ids[3], "invoice.sent")]
        orders.commit()
        assert orders.positions() == {support.id: ids[4]}  # the filtered-out last event is passed too


def test_a_class_consumer_follows_every_assistant_of_the_class_and_only_those(processor):
    first, second, other = Support.objects.create(), Support.objects.create(), Kitchen.objects.create()
    expected = {(first.publish("a", 1), first.id), (second.publish("b", 2), second.id),
                (first.publish("c", 3), first.id)}
    other.publish("k", 4)
    with Support.consumer("audit") as audit:
        seen = list(audit.events(timeout=0.5))  # everything, each batch committed
        assert {(e.id, e.assistant_id) for e in seen} == expected
        assert audit.positions() == {first.id: _queue(first)[-1], second.id: _queue(second)[-1]}
    assert set(directory.read(get_client(), other.metadata[PUBLISH_KEY])) == set()


def test_start_latest_skips_what_was_published_before_registration(processor):
    support = Support.objects.create()
    support.publish("old", None)
    support.publish("old", None)
    with support.consumer("fresh", start="latest") as fresh:
        assert fresh.poll() == []
        new = support.publish("new", {"x": [1, 2]})
        assert [(e.id, e.type, e.data) for e in fresh.poll()] == [(new, "new", {"x": [1, 2]})]


def test_a_consumer_behind_the_retained_range_is_told_and_starts_from_the_oldest_retained(processor, caplog):
    support = Support.objects.create()
    register(get_client(), support, "late")
    ids = [support.publish("step", n) for n in range(5)]
    with support.consumer("late", batch_size=3) as late:
        assert [e.id for e in late.poll()] == ids[:2]  # after its registration
        late.commit()
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    for event_id in _queue(support)[:3]:  # retention removed everything up to and including its position
        api.beta.threads.messages.delete(event_id, thread_id=publish_id)
    with caplog.at_level(logging.WARNING, logger="betaassi_django.publishing"), support.consumer("late") as late:
        assert [e.id for e in late.poll()] == ids[2:]
        assert late.behind == [(support.id, ids[1], ids[2])]
    assert (f"consumer late on {support.id}: its position {ids[1]} was removed by retention; restarting from the "
            f"oldest retained event {ids[2]}") in caplog.messages


def test_async_iteration_and_a_timeout_that_ends_it(processor):
    support = Support.objects.create()
    register(get_client(), support, "async")
    ids = [support.publish("a", n) for n in range(4)]

    consumer = support.consumer("async", batch_size=3)

    async def consume() -> list[str]:
        return [event.id async for event in consumer.aevents(timeout=0.5)]

    try:
        assert asyncio.run(consume()) == ids
    finally:
        consumer.close()
    with support.consumer("async") as consumer:
        assert list(consumer.events(timeout=0.2)) == []  # everything was committed; it ends after the timeout
        assert consumer.positions() == {support.id: ids[-1]}


def test_applied_only_consumers_get_the_processors_verdicts(processor):
    support = Support.objects.create()
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    passed = support.publish("note", "hi", wait=True)
    noop = support.sessions.delete("missing", wait=True)
    junk = api.beta.threads.messages.create(publish_id, role="user", content="not json").id
    applied = support.queue.set_attr("tier", 3, wait=True)
    with support.consumer("verdicts", applied_only=True) as verdicts:
        seen = _take(verdicts, 4)
    assert [(e.id, e.op, e.status) for e in seen] == [
        (passed, "app.event", "passed"), (noop, "session.delete", "noop"), (junk, None, "rejected"),
        (applied, "assistant.set", "applied")]
    assert seen[2].rejected == "not valid JSON"


def test_one_wake_up_reaches_the_processor_and_two_consumers_in_this_process(processor):
    """Both consumers poll every 60 s: only the in-process wake-up can bring them the event within the wait."""
    support = Support.objects.create()
    for name in ("one", "two"):
        register(get_client(), support, name)
    got: dict[str, list[str]] = {"one": [], "two": []}
    ready = threading.Barrier(3)

    def consume(name: str) -> None:
        from django.db import connection

        try:
            with support.consumer(name, poll_interval=60) as consumer:
                consumer.poll()
                ready.wait()
                got[name] = [e.id for e in _take(consumer, 1, timeout=30)]
        finally:
            connection.close()

    threads = [threading.Thread(target=consume, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    ready.wait()
    event_id = support.publish("wake", None, wait=True)
    for thread in threads:
        thread.join(40)
    assert got == {"one": [event_id], "two": [event_id]}


def test_names_are_checked_and_betaassi_names_are_reserved():
    with pytest.raises(ValueError, match="reserved for the app's own consumers"):
        Consumer("betaassi.mirror.x")
    with pytest.raises(ValueError, match="name must be 1 to 55 characters"):
        Consumer("x" * 56)
    with pytest.raises(ValueError, match="start must be one of oldest, latest"):
        Consumer("ok", start="middle")


def test_the_worked_example_emails_one_summary_per_deleted_session(processor, settings):
    """docs/examples/consumer_example.py itself, both ways: its own loop (``run``) and ``consume_queue``."""
    import datetime
    import importlib.util
    import sys

    from django.core import mail
    from django.core.management import call_command

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.MANAGERS = [("Ops", "ops@example.com")]
    path = settings.BASE_DIR / "docs/examples/consumer_example.py"
    spec = importlib.util.spec_from_file_location("consumer_example", path)
    example = importlib.util.module_from_spec(spec)
    sys.modules["consumer_example"] = example  # so that consume_queue imports the handler by its dotted path
    try:
        spec.loader.exec_module(example)
        support = Support.objects.create()
        support.sessions.create("s1", owner=get_user_model().objects.create_user("gone"), wait=True)
        deleted = support.sessions.delete("s1", wait=True)
        support.sessions.delete("ghost", wait=True)  # no such session: noop, no e-mail
        support.publish("order.created", {"n": 1})
        assert example.run(Support, timeout=0.5) == 1
        call_command("consume_queue", "mailer-command", "--once", "--applied-only", "--type", "session.delete",
                     "--handler", "consumer_example.session_deleted", "--assistant", support.id)
    finally:
        sys.modules.pop("consumer_example", None)
    api = get_client()
    created_at = api.beta.threads.messages.retrieve(deleted, thread_id=support.metadata[PUBLISH_KEY]).created_at
    when = datetime.datetime.fromtimestamp(created_at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    body = (f"Session s1 of assistant {support.id} was deleted at {when} UTC.\n"
            f"Event {deleted} (de-duplicate on it: delivery is at least once).")
    assert [(m.subject, m.body, m.to) for m in mail.outbox] == [("[Django] Session s1 deleted", body,
                                                                 ["ops@example.com"])] * 2


def test_over_http_a_consumer_reads_commits_and_restarts_after_its_position_was_removed(backend, processor):
    """The same consumer against a remote backend (daphne serving the embedded API) as against the in-process one:
    a removed position is a 400 ``invalid_cursor`` over the wire too."""
    support = Support.objects.create()
    register(get_client(), support, "remote")
    ids = [support.publish("r", n) for n in range(3)]
    with support.consumer("remote") as remote:
        assert [(e.id, e.data) for e in remote.poll()] == [(i, n) for n, i in enumerate(ids)]
        remote.commit()
        assert remote.positions() == {support.id: ids[2]}
    later = support.publish("r", 3, wait=True)  # applied: the registry's mark is past what retention removes
    for event_id in _queue(support)[:-1]:
        get_client().beta.threads.messages.delete(event_id, thread_id=support.metadata[PUBLISH_KEY])
    with support.consumer("remote") as remote:
        assert [e.id for e in remote.poll()] == [later]
        assert remote.behind == [(support.id, ids[2], later)]


def test_a_consumer_whose_lease_lapsed_never_overwrites_the_next_holders_position(processor, caplog):
    support = Support.objects.create()
    register(get_client(), support, "lapse")
    ids = [support.publish("l", n) for n in range(3)]
    slow = Consumer("lapse", assistant_ids=[support.id], holder="slow", lease_seconds=0.2)
    try:
        assert [e.id for e in slow.poll()] == ids
        time.sleep(0.5)  # its lease ran out while it handled them
        with Consumer("lapse", assistant_ids=[support.id], holder="next", batch_size=2) as successor:
            assert [e.id for e in successor.poll()] == ids[:1]  # after the registration: the same events again
            successor.commit()
            with caplog.at_level(logging.WARNING, logger="betaassi_django.publishing"):
                slow.commit()  # the successor holds the lease: nothing written
        assert slow.positions() == {support.id: ids[0]}
        assert [e.id for e in slow.poll()] == ids[1:]  # from the successor's position on
        time.sleep(0.5)  # lapsed again; this time the successor took it, committed and left before it commits
        with Consumer("lapse", assistant_ids=[support.id], holder="next", batch_size=1) as successor:
            assert [e.id for e in successor.poll()] == ids[1:2]
            successor.commit()
        with caplog.at_level(logging.WARNING, logger="betaassi_django.publishing"):
            slow.commit()  # it takes the free lease back, and sees the position moved: nothing written
        assert slow.positions() == {support.id: ids[1]}
        assert [e.id for e in slow.poll()] == ids[2:]
        slow.commit()
        assert slow.positions() == {support.id: ids[2]}
    finally:
        slow.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"consumer lapse lost the lease of {support.id} to another process",
        f"consumer lapse: not committing {ids[2]} on {support.id} (the lease lapsed)",
        f"consumer lapse: not committing {ids[2]} on {support.id} (the lease lapsed)"]
