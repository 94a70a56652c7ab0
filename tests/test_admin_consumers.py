"""The queue page's consumers (position, lag, lease holder, failures), application events and consumer failures.

Consumers are registered as in production: a ``StreamThread`` created through the model, then a
``consumer.register`` event the processor applies to the directory on the publish thread.
"""

from __future__ import annotations

import json
import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from betaassi_django.client import get_client, use_clients
from betaassi_django.models import ConsumerFailure, PublishedEvent, StreamThread
from betaassi_django.publishing import lease
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.templatetags.betaassi import short_id
from betaassi_django.testing import LiveServer, counting_client, free_port
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def position(desk, name: str) -> StreamThread:
    """A consumer's position thread, and the ``consumer.register`` event that names it (applied later)."""
    thread = StreamThread.objects.create(consumer=name, assistant_id=desk.id)
    publish(desk, Event("consumer.register", None, {"name": name, "thread_id": thread.id}))
    return thread


def commit(thread: StreamThread, hwm: str) -> None:
    """What a consumer's commit writes: the position thread's metadata."""
    thread.hwm = hwm
    thread.save()


def consumers_of(page) -> list[tuple]:
    return [(c.name, c.thread_id, c.hwm, c.lag_text, c.holder, c.failures, c.problem)
            for c in page.context["consumers"]]


def test_the_queue_page_lists_each_consumer_with_its_position_lag_lease_and_failures(web, staff):
    desk = Support.objects.create(name="Desk")
    billing, audit = position(desk, "billing"), position(desk, "audit")
    desk.sessions.create("s-1", owner=staff)
    created = desk.publish("order.created", {"order": 7})
    desk.publish("order.paid", {"order": 7})
    Processor().run_once()
    commit(billing, created)
    assert lease.acquire(desk.id, "worker-a:41", 60, consumer="billing")
    assert lease.acquire(desk.id, "worker-b:42", -1, consumer="audit")  # expired: the consumer is free
    ConsumerFailure.objects.create(consumer="billing", assistant_id=desk.id, event_id=created,
                                   event_type="order.created", attempts=5, error="RuntimeError: out of stock")
    ConsumerFailure.objects.create(consumer="billing", assistant_id="asst_other", event_id="msg_other", attempts=1)

    page = web.get(admin_path(Support, "queue", desk.id))
    assert page.status_code == 200
    assert consumers_of(page) == [
        ("audit", audit.id, "", "5", "", 0, ""),  # nothing committed: all five events are after it
        ("billing", billing.id, created, "1", "worker-a:41", 1, ""),
    ]
    until = page.context["consumers"][1].expires_at
    row = page.text.split('id="consumer-billing"')[1].split("</tr>")[0]
    for cell in ('<td class="consumer-name">billing</td>', f'<code>{short_id(billing.id)}</code>',
                 f'<td class="consumer-hwm"><code>{short_id(created)}</code></td>', '<td class="consumer-lag">1</td>',
                 f'held by worker-a:41 until {until:%H:%M:%S} UTC', '<td class="consumer-failures">1</td>'):
        assert cell in row
    assert '<td class="consumer-hwm"><code>(none yet)</code></td>' in page.text
    assert [(f.consumer, f.event_id, f.event_type, f.attempts, f.error) for f in page.context["consumer_failures"]] == [
        ("billing", created, "order.created", 5, "RuntimeError: out of stock")]
    assert "Events consumers gave up on, newest first (1 of 1)" in page.text


def test_a_running_consumer_shows_its_committed_position_and_its_lease_until_it_closes(web):
    desk = Support.objects.create(name="Desk")
    thread = position(desk, "mailer")
    first = desk.publish("order.created", {"order": 1})
    second = desk.publish("order.created", {"order": 2})
    Processor().run_once()
    url = admin_path(Support, "queue", desk.id)
    with desk.consumer("mailer", holder="mailer-host:7") as consumer:
        assert [e.id for e in consumer.poll()] == [first, second]
        consumer.commit()
        desk.publish("order.paid", {"order": 2})
        page = web.get(url)
        assert consumers_of(page) == [("mailer", thread.id, second, "1", "mailer-host:7", 0, "")]
    assert consumers_of(web.get(url)) == [("mailer", thread.id, second, "1", "", 0, "")]  # released on close


def test_a_queue_without_consumers_says_so(web):
    desk = Support.objects.create(name="Desk")
    page = web.get(admin_path(Support, "queue", desk.id))
    assert page.context["consumers"] == [] and page.context["consumer_failures"] == []
    assert "No consumer is registered on this queue." in page.text
    assert 'id="consumer-failures"' not in page.text


def test_lag_is_capped_and_a_lost_position_or_thread_is_named(web):
    desk = Support.objects.create(name="Desk")
    behind, gone, ahead = position(desk, "behind"), position(desk, "gone"), position(desk, "ahead")
    first = desk.publish("tick", 0)
    for index in range(1, 102):
        desk.publish("tick", index)
    Processor().run_once()
    api = get_client()
    publish_id = desk.metadata[PUBLISH_KEY]
    doomed = publish(desk, Event("session.update", "nobody", {"model": "m"}))
    commit(behind, doomed)
    api.beta.threads.messages.delete(doomed, thread_id=publish_id)  # as retention would
    api.beta.threads.delete(gone.id)
    commit(ahead, first)

    page = web.get(admin_path(Support, "queue", desk.id))
    assert consumers_of(page) == [
        ("ahead", ahead.id, first, "100+", "", 0, ""),
        ("behind", behind.id, doomed, "100+", "", 0,
         "its position was removed by retention; it restarts from the oldest retained event"),
        ("gone", gone.id, "", "unknown", "", 0, "its position thread is gone"),
    ]
    assert '<span class="consumer-problem errornote">its position thread is gone</span>' in page.text


def test_a_thread_that_is_not_the_consumers_position_is_named(web):
    desk, other = Support.objects.create(name="Desk"), Support.objects.create(name="Other")
    stranger = StreamThread.objects.create(consumer="billing", assistant_id=other.id)
    api = get_client()
    publish_id = desk.metadata[PUBLISH_KEY]
    metadata = api.beta.threads.retrieve(publish_id).metadata
    api.beta.threads.update(publish_id, metadata={**metadata, "consumer:billing": stranger.id})  # written by hand
    page = web.get(admin_path(Support, "queue", desk.id))
    assert consumers_of(page) == [
        ("billing", stranger.id, "", "unknown", "", 0, "its thread is not this consumer's position on this assistant")]


def test_application_events_show_their_type_a_data_preview_and_passed(web, staff):
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=staff)
    small = desk.publish("order.created", {"order": 7, "total": "12.50", "note": "café"})
    large = desk.publish("report.ready", {"rows": list(range(100))})
    bare = desk.publish("ping")
    api = get_client()
    body = json.dumps({"v": 1, "op": "app.event", "session_id": None, "args": {"type": "betaassi.own"}})
    reserved = api.beta.threads.messages.create(desk.metadata[PUBLISH_KEY], role="user", content=body).id
    Processor().run_once()
    pending = desk.publish("order.paid", [7])

    page = web.get(admin_path(Support, "queue", desk.id))
    rows = {e["id"]: (e["op"], e["type"], e["session_id"], e["data"], e["args"], e["status"], e["reason"])
            for e in page.context["events"]}
    long_data = json.dumps({"rows": list(range(100))})[:99] + "…"
    assert rows[small] == ("app.event", "order.created", "", '{"note": "café", "order": 7, "total": "12.50"}', "",
                           "passed", "")
    assert rows[large] == ("app.event", "report.ready", "", long_data, "", "passed", "")
    assert rows[bare] == ("app.event", "ping", "", "null", "", "passed", "")
    assert rows[pending] == ("app.event", "order.paid", "", "[7]", "", "pending", "")
    assert rows[reserved] == ("?", "", "", "", "", "rejected",
                              "type must not start with 'betaassi.' (the app's own events)")
    assert [e["body"] for e in page.context["events"] if e["id"] == reserved] == [body]
    assert [e["op"] for e in page.context["events"]][-1] == "session.create"
    row = page.text.split(f"<code>{short_id(small)}</code>")[1].split("</tr>")[0]
    assert '<td class="event-type">order.created</td>' in row
    assert '<td class="event-status">passed</td>' in row
    assert "{&quot;note&quot;: &quot;café&quot;, &quot;order&quot;: 7, &quot;total&quot;: &quot;12.50&quot;}" in row


def test_outcomes_recorded_by_another_deployment_are_read_from_the_messages(web):
    desk = Support.objects.create(name="Desk")
    noop = desk.sessions.update("missing", kind="oneshot")
    passed = desk.publish("order.created", {"order": 1})
    Processor().run_once()
    reason = PublishedEvent.objects.get(event_id=noop).reason
    PublishedEvent.objects.all().delete()  # this database never applied them: another deployment did
    page = web.get(admin_path(Support, "queue", desk.id))
    rows = {e["id"]: (e["status"], e["reason"]) for e in page.context["events"]}
    assert rows == {noop: ("applied (no-op)", reason),
                    passed: ("passed", "processed before this database recorded events")}


def test_the_newest_twenty_failures_are_listed(web):
    desk = Support.objects.create(name="Desk")
    for index in range(21):
        ConsumerFailure.objects.create(consumer="mailer" if index % 2 else "billing", assistant_id=desk.id,
                                       event_id=f"msg_{index:02}", event_type="order.created", attempts=index + 1,
                                       error=f"error {index}")
    page = web.get(admin_path(Support, "queue", desk.id))
    assert [f.event_id for f in page.context["consumer_failures"]] == [f"msg_{i:02}" for i in range(20, 0, -1)]
    assert "Events consumers gave up on, newest first (20 of 21)" in page.text
    assert page.text.count('<tr class="consumer-failure">') == 20


def test_failures_are_listed_while_the_backend_is_down(web, settings):
    desk = Support.objects.create(name="Desk")
    ConsumerFailure.objects.create(consumer="billing", assistant_id=desk.id, event_id="msg_1", attempts=5,
                                   error="boom")
    settings.BETAASSI_BACKEND = "remote"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = f"http://127.0.0.1:{free_port()}/v1", "sk-any"
    page = web.get(admin_path(Support, "queue", desk.id))
    assert page.status_code == 200 and page.context["backend_error"].startswith("the backend is unreachable (")
    assert [(f.consumer, f.event_id) for f in page.context["consumer_failures"]] == [("billing", "msg_1")]
    assert 'id="consumers"' not in page.text and '<tr class="consumer-failure">' in page.text


def test_consumers_are_shown_to_viewers_and_hidden_from_others(staff):
    desk = Support.objects.create(name="Desk")
    billing = position(desk, "billing")
    Processor().run_once()
    url = admin_path(Support, "queue", desk.id)
    viewer = get_user_model().objects.create_user("viewer", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_support"))
    page = client_of(viewer).get(url)
    assert page.status_code == 200 and consumers_of(page) == [("billing", billing.id, "", "1", "", 0, "")]
    nobody = get_user_model().objects.create_user("nobody", password="nobody-pass-1", is_staff=True)
    assert client_of(nobody).get(url).status_code == 403
    outsider = get_user_model().objects.create_user("outsider", password="outsider-pass-1")
    assert client_of(outsider).get(url)["Location"].startswith("/admin/login/")


def test_the_page_reads_two_calls_per_consumer_beyond_the_queue(web):
    desk = Support.objects.create(name="Desk")
    billing, audit = position(desk, "billing"), position(desk, "audit")
    Processor().run_once()
    counting, calls = counting_client()
    with use_clients(counting):
        assert web.get(admin_path(Support, "queue", desk.id)).status_code == 200
    publish_id = desk.metadata[PUBLISH_KEY]
    threads = [c for c in calls if c[1].startswith("/v1/threads/") and not c[1].endswith("/messages")]
    lists = [c for c in calls if c[1] == f"/v1/threads/{publish_id}/messages"]
    assert sorted(path.rsplit("/", 1)[1] for _, path in threads) == sorted(
        [desk.metadata["betaassi_registry"], publish_id, billing.id, audit.id])
    assert len(lists) == 4 and len(calls) == 8  # pending, the page, one per consumer


@pytest.mark.slow
def test_the_queue_page_in_a_browser_at_desktop_and_phone_widths(staff):
    """Screenshots of the page with consumers, application events and failures, served by daphne on this
    test's database (test-artifacts/admin-queue-consumers-*.png). Playwright starts after the data is written
    and stops before the database is flushed: its loop in this thread forbids Django's sync database calls."""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, shared_database_url

    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")

    desk = Support.objects.create(name="Orders desk")
    billing = position(desk, "billing")
    position(desk, "mailer.summaries")
    desk.sessions.create("s-1", owner=staff)
    created = desk.publish("order.created", {"order": 7, "lines": [{"sku": "A-1", "qty": 2}], "total": "12.50"})
    desk.publish("order.paid", {"order": 7, "by": "card"})
    desk.sessions.delete("s-1")
    Processor().run_once()
    desk.publish("order.shipped", {"order": 7, "carrier": "post"})  # pending
    commit(billing, created)
    assert lease.acquire(desk.id, "worker-a:41", 600, consumer="billing")
    ConsumerFailure.objects.create(consumer="billing", assistant_id=desk.id, event_id=created,
                                   event_type="order.created", attempts=5,
                                   error="RuntimeError: the billing service answered 503 five times")
    url = admin_path(Support, "queue", desk.id)
    with (LiveServer(shared_database_url(), env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
                     cwd=settings.BASE_DIR) as server, sync_playwright() as playwright):
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ARTIFACTS.mkdir(exist_ok=True)
        for width, height in ((1280, 800), (390, 844)):
            page = chromium.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(20_000)
            page.goto(server.url + "/admin/login/?next=" + url)
            page.fill("#id_username", "root")
            page.fill("#id_password", "admin-pass-1")
            page.click("input[type=submit]")
            page.wait_for_url(server.url + url)
            assert page.locator("#consumers tr.consumer .consumer-name").all_inner_texts() == [
                "billing", "mailer.summaries"]
            assert page.locator("#consumers tr.consumer .consumer-lag").all_inner_texts() == ["3", "7"]
            assert page.inner_text("#consumer-billing .consumer-lease").startswith("held by worker-a:41 until ")
            assert page.locator("#events tr.app-event .event-type").all_inner_texts() == [
                "order.shipped", "order.paid", "order.created"]
            assert page.locator("#consumer-failures tr.consumer-failure").count() == 1
            # The page never scrolls sideways; on a phone each table does, inside its own box.
            assert page.evaluate("document.documentElement.scrollWidth") == width
            scrolls = page.evaluate("[...document.querySelectorAll('.queue-table')].map(b => b.scrollWidth > "
                                    "b.clientWidth)")
            assert scrolls == ([False, False, False] if width == 1280 else [True, True, True])
            page.screenshot(path=str(ARTIFACTS / f"admin-queue-consumers-{width}.png"), full_page=True)
            page.close()
        chromium.close()
