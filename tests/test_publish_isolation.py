"""One assistant's failing queue never holds up another; local records follow the backend commit."""

from __future__ import annotations

import datetime

import httpx2
import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from betaassi_django.assistants_api.models import Thread as StoredThread
from betaassi_django.client import build_client, get_client, use_clients
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.models import PublishedEvent, PublishState, Session
from betaassi_django.publishing import status
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY, load_registry
from betaassi_django.publishing.processor import Processor
from betaassi_django.registry.layout import PAGE_TYPE
from betaassi_django.registry.pages import page_threads
from tests.conftest import client_of
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice", password="x")


def _registry(assistant) -> dict[str, str | None]:
    return {s.session_id: s.model for s in assistant.sessions.list()}


def _mirror(assistant) -> dict[str, str | None]:
    return dict(Session.objects.filter(assistant_id=assistant.id).values_list("session_id", "model"))


def test_a_broken_registry_is_recorded_backed_off_and_shown_while_others_go_on(user, staff):
    broken, healthy = Support.objects.create(name="broken"), Support.objects.create(name="healthy")
    broken.sessions.create("a1", owner=user)
    Processor().run_once()
    api = get_client()
    _, pages = load_registry(api, broken.metadata[REGISTRY_KEY])
    good_page = pages[0].to_metadata()
    api.beta.threads.update(pages[0].thread_id, metadata={TYPE_KEY: PAGE_TYPE, "applied": "", "sessions": "{{{"})
    pending = broken.sessions.create("a2", owner=user)
    other = healthy.sessions.create("b1", owner=user)

    assert Processor().run_once() == 1  # the healthy assistant's event; the broken one is recorded
    assert PublishedEvent.objects.get(event_id=other).status == "applied"
    assert not PublishedEvent.objects.filter(event_id=pending).exists()
    state = PublishState.objects.get(assistant_id=broken.id)
    assert state.failures == 1 and state.last_error.startswith("JSONDecodeError")
    assert state.retry_at - state.failed_at == datetime.timedelta(seconds=1)
    assert _mirror(broken) == {"a1": None}

    status.apply_now(broken)  # the operator's "now" ignores the back-off: a second failure, twice the wait
    state.refresh_from_db()
    assert state.failures == 2 and state.retry_at - state.failed_at == datetime.timedelta(seconds=2)
    PublishState.objects.filter(pk=broken.id).update(retry_at=timezone.now() + datetime.timedelta(hours=1))
    later = healthy.sessions.create("b2", owner=user)
    assert Processor().run_once() == 1  # inside its back-off the broken one is not tried; the other is
    assert PublishedEvent.objects.get(event_id=later).status == "applied"
    assert PublishState.objects.get(pk=broken.id).failures == 2

    web = client_of(staff)
    changelist = web.get(reverse("admin:testapp_support_changelist"))
    assert changelist.status_code == 200
    assert "Processing the publish queue of broken failed 2 time(s) in a row: JSONDecodeError" in (
        changelist.content.decode())
    for url in (reverse("admin:testapp_support_change", args=[quote(broken.pk)]),
                reverse("admin:betaassi_django_session_changelist")):
        assert web.get(url).status_code == 200, url
    queue_url = reverse("admin:testapp_support_queue", args=[quote(broken.pk)])
    page = web.get(queue_url)
    assert page.status_code == 200 and "failing: 2 attempt(s) in a row" in page.content.decode()
    applied = web.post(queue_url, {"apply": "1"}, follow=True)
    assert applied.status_code == 200 and "Applying the queue of broken failed: JSONDecodeError" in (
        applied.content.decode())
    action = web.post(reverse("admin:testapp_support_changelist"), {
        "action": "apply_pending_now", "_selected_action": [broken.pk, healthy.pk]}, follow=True)
    assert action.status_code == 200 and "Applying the queue of broken failed" in action.content.decode()

    api.beta.threads.update(pages[0].thread_id, metadata=good_page)  # repaired
    status.apply_now(broken)
    assert PublishedEvent.objects.get(event_id=pending).status == "applied"
    assert PublishState.objects.get(pk=broken.id).failures == 0
    assert _mirror(broken) == _registry(broken) == {"a1": None, "a2": None}
    assert "failed" not in web.get(reverse("admin:testapp_support_changelist")).content.decode()


class RootWritesFail(httpx2.BaseTransport):
    """The real backend, except that writes to one thread (the registry's root) cannot reach it."""

    def __init__(self, inner: httpx2.BaseTransport, thread_id: str) -> None:
        self.inner, self.thread_id = inner, thread_id

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path.endswith(f"/threads/{self.thread_id}"):
            raise httpx2.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


def _stored_threads_are_the_queues(assistant) -> None:
    """Every thread in the backend is the queue's, its registry's, or a session's: none left behind."""
    root, pages = load_registry(get_client(), assistant.metadata[REGISTRY_KEY])
    expected = {assistant.metadata[PUBLISH_KEY], root.thread_id, *(t for p in pages for t in page_threads(p)),
                *(s.thread_id for s in assistant.sessions.list())}
    assert set(StoredThread.objects.values_list("id", flat=True)) == expected


def test_a_commit_that_fails_midway_leaves_the_local_tables_equal_to_the_registry(user):
    support = Support.objects.create()
    support.sessions.create("first", owner=user)
    Processor().run_once()
    root_id = support.metadata[REGISTRY_KEY]
    batch = [support.sessions.create(f"s-{n:03d}", owner=user, model="m" * 40) for n in range(60)]  # doubles

    failing = build_client(max_retries=0, wrap_transport=lambda inner: RootWritesFail(inner, root_id))
    with use_clients(failing):
        assert Processor().run_once() == 0
    state = PublishState.objects.get(assistant_id=support.id)
    assert state.failures == 1 and state.last_error.startswith("APIConnectionError")
    assert not PublishedEvent.objects.filter(event_id__in=batch).exists()
    assert _mirror(support) == _registry(support) == {"first": None}
    assert state.orphans  # the new pages it wrote: not in the registry, and known
    assert StoredThread.objects.filter(id__in=state.orphans).count() == len(state.orphans)

    status.apply_now(support)
    assert set(PublishedEvent.objects.filter(event_id__in=batch).values_list("status", flat=True)) == {"applied"}
    state.refresh_from_db()
    assert (state.failures, state.orphans) == (0, [])
    assert _mirror(support) == _registry(support) and len(_registry(support)) == 61
    assert len(load_registry(get_client(), root_id)[0].page_ids) >= 2
    _stored_threads_are_the_queues(support)


def test_an_unreachable_backend_is_a_recorded_failure_not_an_exception(user):
    support = Support.objects.create()
    event_id = support.sessions.create("s", owner=user)
    closed = build_client(backend="remote", base_url="http://127.0.0.1:9/v1", api_key="sk-none", max_retries=0)
    with use_clients(closed):
        assert Processor(assistant_ids=[support.id]).run_once() == 0
    state = PublishState.objects.get(assistant_id=support.id)
    assert state.failures == 1 and state.last_error.startswith("APIConnectionError")
    assert not PublishedEvent.objects.filter(event_id=event_id).exists() and not Session.objects.exists()
    Processor(assistant_ids=[support.id]).run_once(force=True)
    assert PublishedEvent.objects.get(event_id=event_id).status == "applied"
    assert _mirror(support) == _registry(support) == {"s": None}


def test_the_command_reports_a_failing_assistant_and_applies_the_others(user, capsys):
    from django.core.management import CommandError, call_command

    broken, healthy = Support.objects.create(name="broken"), Support.objects.create(name="healthy")
    _, pages = load_registry(get_client(), broken.metadata[REGISTRY_KEY])
    get_client().beta.threads.update(pages[0].thread_id, metadata={TYPE_KEY: PAGE_TYPE, "sessions": "[1"})
    broken.sessions.create("a", owner=user)
    other = healthy.sessions.create("b", owner=user)
    with pytest.raises(CommandError, match="1 assistant\\(s\\) failed"):
        call_command("process_publish_queue", "--once")
    output = capsys.readouterr()
    assert "processed 1 event(s)" in output.out
    assert f"assistant {broken.id} failed: JSONDecodeError" in output.err
    assert PublishedEvent.objects.get(event_id=other).status == "applied"
