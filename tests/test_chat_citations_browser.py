"""The chat page shows a reply's file citations (file_search with the echo responder): Chromium against a live daphne
whose demo assistant searches a handbook; at 1280x800 and 390x844, screenshots kept, no sideways scroll, axe."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.browser_checks import VIEWPORTS, check_page, new_page
from tests.conftest import _database_url, http_client
from tests.test_chat_browser import log_in, send, start_chat

HANDBOOK = ("The office opens at nine. Parking is behind the library, next to the bicycle racks; visitors sign in "
            "at the desk on the ground floor, where a long corridor_with_a_very_long_unbroken_name_for_wrapping "
            "leads to the lifts.\n")


@pytest.fixture(scope="module")
def server():
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.01"}
    with scratch_database_url(_database_url()) as url, LiveServer(url, env=env, cwd=settings.BASE_DIR) as live:
        live.demo = live.demo_login()
        api = http_client(live)
        [demo] = [a for a in api.beta.assistants.list(limit=100).data if a.name == "Demo assistant"]
        handbook = api.files.create(file=("handbook.md", HANDBOOK.encode(), "text/markdown"), purpose="assistants")
        demo = api.beta.assistants.update(demo.id, tools=[{"type": "file_search"}], tool_resources={
            "file_search": {"vector_stores": [{"file_ids": [handbook.id]}]}})
        store_id = demo.tool_resources.file_search.vector_store_ids[0]
        deadline = time.monotonic() + 30
        while api.vector_stores.files.retrieve(handbook.id, vector_store_id=store_id).status == "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield live


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_a_reply_lists_the_files_it_cites(chromium, server, size):
    page = new_page(chromium, size)
    log_in(page, server)
    start_chat(page, server)
    reply = send(page, "parking")
    # The marker reads [1] in the text, and the sources are listed under the bubble.
    assert reply.locator(".body").inner_text() == "echo: parking [context=1] [1]"
    sources = reply.locator("ol.citations")
    assert sources.get_attribute("aria-label") == "Sources"
    assert sources.locator("li .file").all_inner_texts() == ["handbook.md"]
    assert sources.locator("li q").all_inner_texts() == [HANDBOOK.strip()]
    check_page(page, "chat-citations")
    page.reload()  # the history shows them the same way
    page.wait_for_selector("#status.connected")
    reply = page.locator(".msg.assistant").last
    assert reply.locator(".body").inner_text() == "echo: parking [context=1] [1]"
    assert reply.locator("ol.citations li .file").all_inner_texts() == ["handbook.md"]
    page.context.close()
