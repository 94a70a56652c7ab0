"""Backend failures in the admin: an error message, the form back as typed, nothing half-saved.

The failing backends are real: a remote backend on a closed port, a live daphne
that is stopped and started again, a host that answers 500, one that never answers.
"""

from __future__ import annotations

import html
import http.server
import json
import socket
import threading

import openai
import pytest
from django.conf import settings as django_settings

from betaassi_django.client import build_client, get_client, use_clients
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from betaassi_django.testing import LiveServer, free_port, scratch_database_url
from tests.admin_paths import admin_path
from tests.conftest import _database_url
from tests.test_admin import shown, support_form
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def desk(staff):
    """An assistant with one applied session, made while the backend worked."""
    desk = Support.objects.create(name="Desk", tier=2)
    desk.sessions.create("s-1", owner=staff)
    Processor().run_once()
    return desk


@pytest.fixture
def backend_down(settings, desk):
    """The remote backend on a port where nothing listens."""
    settings.BETAASSI_BACKEND = "remote"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = f"http://127.0.0.1:{free_port()}/v1", "sk-any"
    return desk


def unreachable(message: str) -> bool:
    return "failed: the backend is unreachable (" in message and message.endswith("Nothing was changed.")


def test_saving_while_the_backend_is_down_keeps_the_form_and_the_mirror(web, backend_down):
    desk = backend_down
    response = web.post(admin_path(Support, "change", desk.id), support_form(name="Renamed", tier="9"))
    assert response.status_code == 200
    [message] = shown(response, "error")
    assert message.startswith("Saving Renamed in the backend failed: the backend is unreachable (") and unreachable(
        message)
    assert [m.split(":")[0] for m in shown(response, "warning")] == ["Pending events and queue lag are unknown"]
    form = response.context["adminform"].form
    assert form.non_field_errors() == [message]
    assert 'value="Renamed"' in response.text  # what was typed comes back
    mirror = Support.objects.get()
    assert (mirror.name, mirror.tier) == ("Desk", 2)


def test_adding_while_the_backend_is_down_creates_nothing(web, backend_down):
    response = web.post("/admin/testapp/support/add/", support_form(name="New", tier="1"))
    assert response.status_code == 200
    assert unreachable(shown(response, "error")[0])
    assert list(Support.objects.values_list("name", flat=True)) == ["Desk"]


def test_deleting_while_the_backend_is_down_keeps_everything(web, backend_down):
    desk = backend_down
    response = web.post(admin_path(Support, "delete", desk.id), {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == admin_path(Support, "delete", desk.id)
    [message] = shown(response)
    assert message.startswith("Deleting Desk in the backend failed: the backend is unreachable (")
    assert Support.objects.filter(pk=desk.pk).exists() and Session.objects.filter(assistant_id=desk.id).exists()

    bulk = web.post("/admin/testapp/support/", {"action": "delete_selected", "_selected_action": [desk.id],
                                                "post": "yes"})
    [message] = shown(bulk)
    assert message.startswith("Deleting Desk failed: the backend is unreachable (")
    assert message.endswith("It was kept; 0 deleted before it.")
    assert Support.objects.filter(pk=desk.pk).exists()


def test_pages_still_render_while_the_backend_is_down(web, backend_down):
    desk = backend_down
    listing = web.get("/admin/testapp/support/")
    assert listing.status_code == 200
    [warning] = shown(listing)
    assert warning.startswith("Pending events and queue lag are unknown: the backend is unreachable (")
    [row] = listing.context["cl"].result_list
    assert (row.sessions_count, getattr(row, "queue_lag_text", "unknown")) == (1, "unknown")

    page = web.get(admin_path(Support, "queue", desk.id))
    assert page.status_code == 200 and page.context["backend_error"].startswith("the backend is unreachable (")

    sessions = web.get("/admin/betaassi_django/session/")
    assert sessions.status_code == 200
    assert [(r.session_id, r.status_text) for r in sessions.context["cl"].result_list] == [
        ("s-1", "unknown (backend unreachable)")]

    change = web.get(admin_path(Support, "change", desk.id))
    assert change.status_code == 200


def test_actions_while_the_backend_is_down_report_and_change_nothing(web, backend_down):
    desk = backend_down
    applied = web.post(admin_path(Support, "queue", desk.id), {"apply": "1"})
    [message] = shown(applied)
    assert message.startswith("Applying the queue of Desk failed: the backend is unreachable (")
    synced = web.post("/admin/testapp/support/", {"action": "sync_from_backend", "_selected_action": [desk.id]})
    [message] = shown(synced)
    assert message.startswith("Syncing Desk failed: the backend is unreachable (")
    assert message.endswith("The mirror was kept as it was.")
    assert Support.objects.get().name == "Desk" and Session.objects.count() == 1


def test_sessions_while_the_backend_is_down_publish_nothing(web, staff, backend_down):
    desk = backend_down
    response = web.post("/admin/betaassi_django/session/add/", {
        "assistant": desk.id, "session_id": "s-2", "owner": staff.pk, "kind": "default"})
    assert response.status_code == 200
    [message] = shown(response, "error")
    assert message.startswith("Publishing the session s-2 failed: the backend is unreachable (")
    session = Session.objects.get()
    edited = web.post(admin_path(Session, "change", session.pk), {"kind": "oneshot"})
    assert edited.status_code == 200
    assert shown(edited, "error")[0].startswith("Publishing the session s-1 failed: the backend is unreachable")
    deleted = web.post(admin_path(Session, "delete", session.pk), {"post": "yes"})
    assert shown(deleted, "error")[0].startswith(
        "Publishing the deletion of session s-1 failed: the backend is unreachable")
    assert list(Session.objects.values_list("session_id", "kind")) == [("s-1", "default")]


@pytest.fixture
def remote(settings):
    """A live daphne serving the embedded API as a remote backend, on its own database."""
    with scratch_database_url(_database_url()) as url:
        server = LiveServer(url, cwd=django_settings.BASE_DIR).start()
        try:
            settings.BETAASSI_BACKEND = "remote"
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = server.base_url, server.api_key
            yield server
        finally:
            server.stop()


@pytest.mark.slow
def test_a_stopped_remote_backend_leaves_both_sides_as_they_were(web, remote):
    response = web.post("/admin/testapp/support/add/", support_form(name="Remote desk", tier="4"))
    assert response.status_code == 302
    desk = Support.objects.get()
    web.get(response["Location"])  # shows (and so clears) the "added" message

    remote.stop()
    changed = web.post(admin_path(Support, "change", desk.id), support_form(name="Renamed", tier="8"))
    assert changed.status_code == 200 and unreachable(shown(changed, "error")[0])
    deleted = web.post(admin_path(Support, "delete", desk.id), {"post": "yes"})
    assert deleted.status_code == 302 and unreachable(shown(deleted, "error")[0])

    remote.start()  # the same database and port: what the backend held before it went down
    api = build_client(backend="remote", base_url=remote.base_url, api_key=remote.api_key, max_retries=0)
    back = api.beta.assistants.retrieve(desk.id)
    assert (back.name, back.metadata["tier"]) == ("Remote desk", "4")
    mirror = Support.objects.get()
    assert (mirror.name, mirror.tier, mirror.metadata) == ("Remote desk", 4, back.metadata)

    again = web.post(admin_path(Support, "change", desk.id), support_form(name="Renamed", tier="8"))
    assert again.status_code == 302
    assert api.beta.assistants.retrieve(desk.id).name == "Renamed"


class FailingHost(http.server.BaseHTTPRequestHandler):
    """A remote host in trouble: every request gets a 500 with the API's error body."""

    def _fail(self) -> None:
        body = json.dumps({"error": {"message": "The server had an error while processing your request.",
                                     "type": "server_error", "param": None, "code": None}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_host(settings, desk):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.BETAASSI_BACKEND = "remote"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = f"http://127.0.0.1:{server.server_port}/v1", "sk-any"
    yield desk
    server.shutdown()


def test_a_500_from_the_backend_is_an_error_message(web, failing_host):
    desk = failing_host
    response = web.post(admin_path(Support, "change", desk.id), support_form(name="Renamed"))
    assert response.status_code == 200
    assert shown(response, "error") == ["Saving Renamed in the backend failed: the backend answered 500: The server "
                                        "had an error while processing your request. Nothing was changed."]
    assert html.escape(shown(response, "error")[0]) in response.text
    assert Support.objects.get().name == "Desk"


@pytest.fixture
def silent_host(desk):
    """A host that accepts connections and never answers; the client gives up after half a second."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    api = build_client(backend="remote", base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
                       api_key="sk-any", timeout=0.5, max_retries=0)
    with use_clients(api):
        yield desk
    listener.close()


def test_a_backend_timeout_is_an_error_message(web, silent_host):
    desk = silent_host
    response = web.post(admin_path(Support, "change", desk.id), support_form(name="Renamed"))
    assert response.status_code == 200
    assert shown(response, "error") == ["Saving Renamed in the backend failed: the backend did not answer in time. "
                                        "Nothing was changed."]
    assert Support.objects.get().name == "Desk"
    with pytest.raises(openai.APITimeoutError):
        get_client().beta.assistants.retrieve(desk.id)
