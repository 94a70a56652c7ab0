"""A user's own sessions in a real browser (Playwright driving Debian's Chromium) against a live daphne, at a
laptop's and a phone's size: the list with a pending deletion, the change and delete pages, and a deletion done
with the keyboard alone.

The server runs without a processor, so a deletion published before the pages are looked at stays pending;
the keyboard deletion then runs ``process_publish_queue`` beside it, as a deployment does.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.browser_checks import VIEWPORTS, check_page, new_page
from tests.conftest import _database_url

LONG_ID = "quarterly-planning-notes-for-the-berlin-office-2026-q3-draft"  # 60 characters, the longest an id may be

#: Sessions of the demo user, applied through the queue; then one deletion published and left pending.
SETUP = f"""
import datetime
from django.contrib.auth import get_user_model
from django.utils import timezone
from betaassi_django.models import Assistant, Session
from betaassi_django.publishing.processor import Processor

demo = Assistant.objects.get(name="Demo assistant")
Assistant.objects.create(name="Research helper", model="gpt-4o")
owner = get_user_model().objects.get(username="demo")
for session_id, kind, n in [("weekly-report", "manyshots", 12), ("{LONG_ID}", "default", None),
                            ("notes", "oneshot", None), ("old-experiment", "default", None)]:
    demo.sessions.create(session_id, owner=owner, kind=kind, context_messages=n)
Processor().run_once()
now = timezone.now()
Session.objects.filter(session_id="weekly-report").update(touched_at=now - datetime.timedelta(hours=3))
Session.objects.filter(session_id="notes").update(touched_at=now - datetime.timedelta(seconds=20))
Session.objects.filter(session_id="old-experiment").update(touched_at=now - datetime.timedelta(days=9))
demo.sessions.delete("old-experiment")
print(demo.id)
"""


@pytest.fixture(scope="module")
def server():
    with scratch_database_url(_database_url()) as url, LiveServer(url, cwd=settings.BASE_DIR) as live:
        live.login_as = live.demo_login()
        live.assistant_id = live.manage("shell", "-c", SETUP).strip().splitlines()[-1]
        yield live


def logged_in(chromium, server, size: str):
    page = new_page(chromium, size)
    page.goto(server.url + "/accounts/login/")
    page.fill("#id_username", server.login_as[0])
    page.fill("#id_password", server.login_as[1])
    page.click("#login")
    page.wait_for_url(server.url + "/")
    return page


def row(page, session_id: str):
    return page.locator(f'tr.session[data-session="{session_id}"]')


def tab_to(page, selector: str, limit: int = 60) -> None:
    """Press Tab until the element is focused, as a keyboard user reaches it (fails if it is never reached)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return
    raise AssertionError(f"{selector} is never reached with Tab")


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_list_the_change_and_the_delete_pages(chromium, server, size):
    page = logged_in(chromium, server, size)
    assert page.locator("section.assistant h2").all_inner_texts() == ["Demo assistant", "Research helper"]
    pending = row(page, "old-experiment")
    assert pending.locator(".badge").inner_text() == "Deleting…"
    assert pending.locator("a").count() == 0 and pending.locator("button[disabled]").count() == 2
    if size == "desktop":  # the first look, within a minute of the setup's touch
        assert row(page, "notes").locator(".last-used").inner_text() == "just now"
    assert row(page, "weekly-report").locator(".last-used").inner_text() == "3\xa0hours ago"  # Django's timesince
    assert row(page, "old-experiment").locator(".last-used").inner_text() == "1\xa0week ago"
    assert row(page, "weekly-report").locator("td").first.inner_text().endswith("last 12 messages")
    assert row(page, LONG_ID).locator("a.session-link").get_attribute("title") == f"Open the chat of {LONG_ID}"
    for cell in (row(page, LONG_ID).locator("a.session-link"), page.locator(".assistant-id").first):
        box, card = cell.bounding_box(), page.locator("section.assistant").first.bounding_box()
        assert box["x"] + box["width"] <= card["x"] + card["width"]  # wrapped inside the card, not past it
    assert "0 minutes" not in page.inner_text("main")
    check_page(page, "sessions-list")

    page.locator('tr[data-session="weekly-report"] a.edit').click()
    page.wait_for_url(f"{server.url}/sessions/{server.assistant_id}/weekly-report/edit/")
    assert page.input_value("#id_kind") == "manyshots" and page.input_value("#id_context_messages") == "12"
    check_page(page, "session-edit")
    page.fill("#id_context_messages", "5000")
    page.click("#save")
    page.locator(".has-errors .errorlist").wait_for()
    assert page.inner_text(".has-errors .errorlist") == "Ensure this value is less than or equal to 1000."
    check_page(page, "session-edit-errors")

    page.goto(f"{server.url}/sessions/{server.assistant_id}/{LONG_ID}/delete/")
    assert page.inner_text("h1") == f"Delete session {LONG_ID}?"
    check_page(page, "session-delete")
    page.context.close()


def test_a_deletion_with_the_keyboard_alone(chromium, server):
    processor = subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", "--interval", "0.2"],
                                 cwd=settings.BASE_DIR, env=server.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        page = logged_in(chromium, server, "desktop")
        tab_to(page, 'tr[data-session="notes"] a.delete')
        page.keyboard.press("Enter")
        page.wait_for_url(f"{server.url}/sessions/{server.assistant_id}/notes/delete/")
        tab_to(page, "#confirm-delete")
        page.keyboard.press("Enter")
        page.wait_for_url(server.url + "/")
        assert page.inner_text(".messages") == "Session notes was deleted."
        assert row(page, "notes").count() == 0
        # The processor applied the deletion that was pending since the setup too, in queue order.
        assert row(page, "old-experiment").count() == 0
        assert row(page, "weekly-report").count() == 1
        check_page(page, "sessions-after-delete")
    finally:
        processor.terminate()
        processor.wait(10)
