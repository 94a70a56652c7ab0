"""The admin in a real browser (Playwright driving Debian's Chromium) against a live daphne.

The server runs the test settings (so the developer's own ``Support`` assistant is
registered with one line in ``tests/testapp/admin.py``) and no processor: what
the admin publishes stays pending until the operator applies the queue.
"""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from betaassi_django.client import build_client
from betaassi_django.models import Session
from betaassi_django.testing import LiveServer, scratch_database_url
from tests.admin_paths import admin_path
from tests.conftest import ARTIFACTS, _database_url
from tests.testapp.models import Support

PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def server():
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    with scratch_database_url(_database_url()) as url:
        live = LiveServer(url, env=env, cwd=settings.BASE_DIR)
        live.manage("migrate", "--run-syncdb", "--noinput", "-v", "0")  # the test app has no migrations
        with live:
            live.manage("createsuperuser", "--noinput", "--username", "operator", "--email", "op@example.com")
            yield live


@pytest.mark.slow
def test_an_operator_creates_an_assistant_adds_a_session_applies_the_queue_and_opens_the_chat(chromium, server):
    page = chromium.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(server.url + "/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(server.url + "/admin/")
    assert page.locator("a", has_text="Supports").count() == 1

    # An assistant of the developer's own class, with its own fields.
    page.goto(server.url + "/admin/testapp/support/add/")
    page.fill("#id_name", "Browser desk")
    page.fill("#id_model", "gpt-4o-mini")
    page.fill("#id_tier", "5")
    page.check("#id_escalate")
    page.click("input[name=_save]")
    page.wait_for_url(server.url + "/admin/testapp/support/")
    row = page.locator("#result_list tbody tr", has_text="Browser desk")
    assert row.locator("td.field-type_label").inner_text() == "testapp.Support"
    assistant_id = row.locator("td.field-backend_id span.short-id").get_attribute("title")  # the whole id
    api = build_client(backend="remote", base_url=server.base_url, api_key=server.api_key, max_retries=0)
    remote = api.beta.assistants.retrieve(assistant_id)
    assert (remote.name, remote.model, remote.metadata["tier"], remote.metadata["escalate"]) == (
        "Browser desk", "gpt-4o-mini", "5", "true")

    # A session: published, pending until the queue is applied.
    page.goto(server.url + "/admin/betaassi_django/session/add/")
    page.select_option("#id_assistant", label="Browser desk (testapp.Support)")
    page.fill("#id_session_id", "from-admin")
    page.select_option("#id_owner", label="operator")
    page.select_option("#id_kind", "manyshots")
    page.fill("#id_context_messages", "2")
    page.click("input[name=_save]")
    page.wait_for_url(server.url + admin_path(Session, "changelist", assistant=assistant_id))
    assert page.locator(".messagelist .success").inner_text().startswith("Published session.create for from-admin")
    assert page.locator("tr.pending-session").inner_text().split("\t")[:2] == ["from-admin", "Browser desk"]

    page.goto(server.url + admin_path(Support, "queue", assistant_id))
    assert page.inner_text("#lag") == "1"
    assert page.locator("#events tr.event .event-status").all_inner_texts() == ["pending"]
    page.click("#apply-now")
    page.wait_for_selector(".messagelist .success")
    assert page.locator(".messagelist .success").inner_text() == (
        "Browser desk: 1 event(s) processed; nothing is pending.")
    assert page.inner_text("#lag") == "0"
    assert page.locator("#events tr.event .event-status").all_inner_texts() == ["applied"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-queue.png"), full_page=True)

    page.goto(server.url + "/admin/betaassi_django/session/")
    assert page.locator("tr.pending-session").count() == 0
    row = page.locator("#result_list tbody tr", has_text="from-admin")
    assert row.locator("td.field-status").inner_text() == "applied"
    assert row.locator("td.field-settings").inner_text() == "manyshots, N=2"
    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)

    chat_link = row.locator("a.chat-link").get_attribute("href")

    # The assistant's page: its own fields, and the session in the inline.
    page.goto(server.url + admin_path(Support, "change", assistant_id))
    assert page.input_value("#id_tier") == "5" and page.is_checked("#id_escalate")
    assert page.input_value("#id_sessions-0-session_id") == "from-admin"
    assert page.inner_text("#sessions-0 td.field-status") == "applied"
    page.screenshot(path=str(ARTIFACTS / "admin-assistant.png"), full_page=True)

    page.goto(server.url + chat_link)
    page.wait_for_url(f"{server.url}/chat/{assistant_id}/from-admin/")
    page.wait_for_selector("#status.connected")
    page.fill("#content", "hello from the admin")
    page.press("#content", "Enter")
    page.locator(".msg.assistant", has_text="echo: hello from the admin [context=1]").wait_for()
    page.close()
