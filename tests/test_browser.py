"""A real browser (Playwright driving Debian's Chromium) against a live daphne with the in-server processor."""

from __future__ import annotations

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import ARTIFACTS, _database_url


@pytest.fixture(scope="module")
def server():
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.05"}
    with scratch_database_url(_database_url()) as url, LiveServer(url, env=env, cwd=settings.BASE_DIR) as live:
        yield live


def test_log_in_start_a_session_and_chat(chromium, server):
    username, password = server.demo_login()
    page = chromium.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.url + "/")
    assert page.url == server.url + "/accounts/login/?next=/"
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("#login")
    page.wait_for_url(server.url + "/")
    assert page.locator("section.assistant h2").first.inner_text().startswith("Demo assistant")

    assert page.locator("#id_session_id").count() == 0  # an ordinary user's session gets a random id
    page.select_option("#id_kind", "manyshots")
    page.fill("#id_context_messages", "2")
    page.click("#start")
    page.wait_for_url("**/chat/*/chat-*/")
    session_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.wait_for_selector("#status.connected")
    assert page.inner_text("#session-kind") == "last 2 messages"

    page.fill("#content", "hello from the browser")
    page.press("#content", "Enter")
    page.locator(".msg.user", has_text="hello from the browser").wait_for()
    reply = page.locator(".msg.assistant").last
    reply.filter(has_text="[context=1]").wait_for()
    assert reply.inner_text() == "echo: hello from the browser [context=1]"
    # message.completed ends the streaming state (the last delta can arrive a moment before it).
    page.locator(".msg.assistant:not(.streaming)", has_text="[context=1]").wait_for()
    assert page.locator(".msg.assistant.streaming").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    page.reload()  # history comes back with session.ready
    page.wait_for_selector("#status.connected")
    assert page.locator(".msg").all_inner_texts() == [
        "hello from the browser", "echo: hello from the browser [context=1]"]

    page.goto(server.url + "/")
    assert page.locator("a.session-link", has_text=session_id).count() == 1
    page.close()


def test_the_chat_page_reconnects_after_the_server_restarts(chromium):
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true"}
    with scratch_database_url(_database_url()) as url:
        first = LiveServer(url, env=env, cwd=settings.BASE_DIR).start()
        try:
            username, password = first.demo_login()
            page = chromium.new_page()
            page.set_default_timeout(20_000)
            page.goto(first.url + "/accounts/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.click("#login")
            page.click("#start")
            page.wait_for_selector("#status.connected")
        finally:
            first.stop()
        page.wait_for_selector("#status:not(.connected)")
        assert page.inner_text("#status").startswith("disconnected; reconnecting in")
        # The retries back off (0.5, 1, 2, 4 s...); "Reconnect now" tries at once, from the keyboard too.
        page.wait_for_function("/reconnecting in [4-9] s/.test(document.getElementById('status').textContent)")
        assert page.locator("#reconnect").is_visible()
        page.focus("#reconnect")
        with page.expect_websocket(timeout=1500):
            page.keyboard.press("Enter")
        # That try failed too (no server): the back-off starts again from 0.5 s.
        page.wait_for_function("document.getElementById('status').textContent.startsWith('disconnected;"
                               " reconnecting in 1 s')")
        with LiveServer(url, env=env, cwd=settings.BASE_DIR, port=first.port):
            page.wait_for_selector("#status.connected")
            assert page.locator("#reconnect").is_hidden()
            page.fill("#content", "back again")
            page.press("#content", "Enter")
            page.locator(".msg.assistant", has_text="echo: back again [context=1]").wait_for()
        page.close()
