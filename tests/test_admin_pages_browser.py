"""The admin's pages as people see them, in Chromium at 1280x800 and 390x844 against a live daphne.

Each page is screenshot, must not scroll sideways and must pass axe-core (``tests/browser_checks.py``); the
sessions changelist keeps its Status and Chat columns on screen at 1280 px, and the Publish queue button of an
assistant whose id holds ``_`` reaches the queue page. The server runs ``tests.settings`` (the
project's, where the app comes ahead of the admin as docs/admin.md asks), so every admin page links the app's favicon.
"""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.browser_checks import check_page, new_page
from tests.conftest import _database_url

PASSWORD = secrets.token_urlsafe(12)

#: Run in the server's database before it starts: an assistant with a name and one without, sessions applied,
#: one pending creation, two API keys (one revoked). Prints the two assistant ids.
SEED = """
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from betaassi_django.assistants_api.models import ApiKey
from betaassi_django.models import Assistant, Session
from betaassi_django.publishing.processor import Processor

operator = get_user_model().objects.get(username="operator")
desk = Assistant.objects.create(name="Help desk", model="gpt-4o-mini")
bare = Assistant.objects.create(name="", model="gpt-4o-mini")
for name in ("morning_shift", "a-rather-long-session-name-for-the-evening-shift", "s_3"):
    desk.sessions.create(name, owner=operator)
desk.sessions.update("s_3", kind="manyshots", context_messages=12, model="gpt-4o-mini")
Processor().run_once()
Session.objects.filter(session_id="morning_shift").update(touched_at=timezone.now() - timedelta(minutes=5))
Session.objects.filter(session_id="s_3").update(touched_at=timezone.now())
desk.sessions.create("not_applied_yet", owner=operator)
ApiKey.issue("ci runner", read_only=True)
revoked, _ = ApiKey.issue("old laptop")
ApiKey.objects.filter(pk=revoked.pk).update(revoked=timezone.now())
print(desk.id, bare.id)
"""


@pytest.fixture(scope="module")
def server():
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    with scratch_database_url(_database_url()) as url:
        live = LiveServer(url, env=env, cwd=settings.BASE_DIR)
        live.manage("migrate", "--run-syncdb", "--noinput", "-v", "0")  # the test app has no migrations
        live.manage("createsuperuser", "--noinput", "--username", "operator", "--email", "op@example.com")
        live.ids = live.manage("shell", "-c", SEED).split()[-2:]  # after shell's own line on imports
        with live:
            yield live


def logged_in(chromium, server, size: str):
    """A page logged in to the admin as the superuser."""
    page = new_page(chromium, size)
    page.goto(server.url + "/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(server.url + "/admin/")
    return page


def in_view(page, selector: str, clip: str = "#changelist .results") -> bool:
    """Whether every element matching ``selector`` is on screen: within the viewport's width and within the
    box of ``clip`` (the changelist table's own scrolling container hides what lies past its right edge)."""
    right = page.viewport_size["width"]
    if clip and page.locator(clip).count():
        box = page.locator(clip).bounding_box()
        right = min(right, box["x"] + box["width"])
    found = page.locator(selector)
    boxes = [found.nth(i).bounding_box() for i in range(found.count())]
    return bool(boxes) and all(box["x"] >= 0 and box["x"] + box["width"] <= right + 0.5 for box in boxes)


PAGES = {
    "admin-assistants": "/admin/betaassi_django/assistant/",
    "admin-sessions": "/admin/betaassi_django/session/",
    "admin-api-keys": "/admin/assistants_api/apikey/",
}


@pytest.mark.slow
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_admin_pages_fit_and_pass_axe_and_the_queue_button_works(chromium, server, size):
    page = logged_in(chromium, server, size)
    desk_id, bare_id = server.ids
    for name, path in PAGES.items():
        page.goto(server.url + path)
        check_page(page, name)
        assert page.locator("link[rel=icon]").get_attribute("href") == "/static/betaassi_django/favicon.svg"

    page.goto(server.url + PAGES["admin-sessions"])
    assert page.locator("#result_list tbody tr").count() == 3
    if size == "desktop":  # the key columns are on screen, not behind the table's own scrollbar
        for column in ("session_id", "assistant_link", "status", "chat_link"):
            assert in_view(page, f"#result_list tbody .field-{column}"), f"{column} is off screen"
            assert in_view(page, f"#result_list th.column-{column}"), f"{column}'s heading is off screen"
    assert page.locator("#result_list td.field-last_used").all_inner_texts() == [
        "-", "5\xa0minutes ago", "just now"]
    assert page.locator("tr.pending-session td").nth(2).inner_text() == "operator"
    page.locator("#result_list .field-session_id a", has_text="s_3").click()
    page.wait_for_selector("#session_form")
    check_page(page, "admin-session")

    page.goto(server.url + PAGES["admin-assistants"])
    row = page.locator("#result_list tbody tr", has_text="Help desk")
    assert row.locator("td.field-backend_id span").get_attribute("title") == desk_id
    assert row.locator("td.field-backend_id").inner_text() == f"asst_{desk_id[5:9]}…{desk_id[-5:]}"
    if size == "desktop":
        assert in_view(page, "#result_list td.field-backend_id")
    row.locator("a", has_text="Help desk").click()
    page.wait_for_selector("#assistant_form")
    assert page.title() == "Help desk | Change assistant | Django site admin"
    assert page.locator(".breadcrumbs").inner_text().endswith("\u203a Help desk")
    assert page.locator("#sessions-group tbody tr.has_original").count() == 3
    check_page(page, "admin-assistant")

    page.click("a.queue-link")  # the Publish queue button: the id holds "_", quoted "_5F" in the URL
    page.wait_for_selector("#events")
    assert page.locator("#content h1").inner_text() == "Publish queue of Help desk"
    assert page.locator(".queue-state dd code").first.inner_text() == desk_id
    check_page(page, "admin-queue")

    page.goto(server.url + PAGES["admin-assistants"])
    page.locator("#result_list a", has_text="(no name)").click()
    page.wait_for_selector("#assistant_form")
    assert page.title() == f"{bare_id} | Change assistant | Django site admin"
    check_page(page, "admin-assistant-no-name")

    # Every page linked the app's favicon (above), which is served: the browser has no reason to ask for
    # /favicon.ico (headless Chromium never does, so the link and the file are what is checked).
    icon = page.request.get(server.url + "/static/betaassi_django/favicon.svg")
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    page.context.close()


@pytest.mark.slow
def test_the_api_keys_filter_reads_active_and_revoked(chromium, server):
    page = logged_in(chromium, server, "desktop")
    page.goto(server.url + PAGES["admin-api-keys"])
    filters = page.locator("#changelist-filter")
    assert filters.locator("a", has_text="Active").count() == 1 and "Empty" not in filters.inner_text()
    filters.locator("a", has_text="Revoked").click()
    page.wait_for_url("**?status=revoked")
    assert page.locator("#result_list td.field-name, #result_list th.field-name").all_inner_texts() == ["old laptop"]
    page.locator("#changelist-filter a", has_text="Active").click()
    page.wait_for_url("**?status=active")
    assert sorted(page.locator("#result_list th.field-name").all_inner_texts()) == ["ci runner", "live-server"]
    page.context.close()
