"""The chat page, the login page and the shared page base as people see them: Chromium (Playwright) against a live
daphne with the in-server processor, the echo responder (``echo: <text> [context=N]``) slowed to 0.05 s a word.

Markdown sent to the echo responder comes back as a Markdown reply, so the rendering, the sanitising, the stop
button and the keyboard are driven through the real page, socket and run engine.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from playwright.sync_api import expect

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.browser_checks import VIEWPORTS, check_page, new_page, shoot
from tests.conftest import _database_url
from tests.fake_upstream import Calls, FakeUpstream, Text

MARKDOWN = ("Here:\n\n- first\n- second\n\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "See [the docs](https://example.com/docs).")
XSS = ('<img src=x onerror="window.__xss=1"> [click](javascript:window.__xss=2) '
       "<script>window.__xss=3</script>")
LONG = " ".join(f"word{i}" for i in range(200))  # 200 words at 0.05 s: a reply streaming for 10 s


@pytest.fixture(scope="module")
def server():
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0.05"}
    with scratch_database_url(_database_url()) as url, LiveServer(url, env=env, cwd=settings.BASE_DIR) as live:
        live.demo = live.demo_login()
        yield live


def log_in(page, server) -> None:
    page.goto(server.url + "/accounts/login/")
    page.fill("#id_username", server.demo[0])
    page.fill("#id_password", server.demo[1])
    page.click("#login")
    page.wait_for_url(server.url + "/")


def start_chat(page, server, assistant: str = "Demo assistant") -> None:
    page.goto(server.url + "/")
    page.select_option("#id_assistant", label=assistant)
    page.click("#start")
    page.wait_for_url("**/chat/*/chat-*/")
    page.wait_for_selector("#status.connected")


def send(page, text: str):
    """Send ``text`` from the composer; the locator of the reply bubble, once its run has ended."""
    replies = page.locator(".msg.assistant").count()
    page.fill("#content", text)
    page.press("#content", "Enter")
    page.wait_for_function("n => { const r = document.querySelectorAll('.msg.assistant')[n];"
                           " return r && !r.classList.contains('streaming'); }", arg=replies)
    return page.locator(".msg.assistant").nth(replies)


def assert_markdown_rendered(page, reply) -> None:
    assert reply.locator(".body li").all_inner_texts() == ["first", "second"]
    assert reply.locator(".body pre code").text_content() == "print('hi')\n"
    assert reply.locator(".code-bar span").inner_text() == "python"
    assert reply.locator("table th").all_inner_texts() == ["a", "b"]
    assert reply.locator("table td").all_inner_texts() == ["1", "2"]
    link = reply.locator("a", has_text="the docs")
    assert [link.get_attribute(name) for name in ("href", "target", "rel")] == [
        "https://example.com/docs", "_blank", "noopener noreferrer nofollow"]
    assert reply.locator(".body > p").last.inner_text() == "See the docs. [context=1]"
    user = page.locator(".msg.user").last  # the user's own text stays plain
    assert user.inner_text() == MARKDOWN
    assert user.locator("li, pre, table, a").count() == 0


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_pages_fit_pass_axe_and_ask_for_no_favicon_ico(chromium, server, size):
    page = new_page(chromium, size)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url + "/accounts/login/")
    check_page(page, "login")
    log_in(page, server)
    check_page(page, "sessions")
    start_chat(page, server)
    check_page(page, "chat-empty")
    send(page, MARKDOWN)
    check_page(page, "chat-markdown")

    # The composer is inside the viewport, below the log, whatever the log holds; also when an on-screen
    # keyboard takes the lower half (interactive-widget=resizes-content: the layout viewport shrinks).
    for height in (page.viewport_size["height"], page.viewport_size["height"] // 2):
        page.set_viewport_size({"width": page.viewport_size["width"], "height": height})
        box = page.locator("#composer").bounding_box()
        assert box["y"] > page.locator("#log").bounding_box()["y"]
        assert box["y"] + box["height"] <= height
        assert page.evaluate("document.scrollingElement.scrollHeight") <= height
        expect(page.locator(".msg.assistant").last.locator(".body > p").last).to_be_in_viewport()
    shoot(page, "chat-keyboard")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon == "/static/betaassi_django/favicon.svg"
    answer = page.request.get(server.url + icon)
    assert (answer.status, answer.headers["content-type"]) == (200, "image/svg+xml")
    assert [url for url in requests if url.endswith("/favicon.ico")] == []
    page.context.close()


def test_a_markdown_reply_renders_as_it_streams_and_in_the_history(chromium, server):
    page = new_page(chromium, "desktop", permissions=["clipboard-read", "clipboard-write"])
    log_in(page, server)
    start_chat(page, server)
    reply = send(page, MARKDOWN)
    assert_markdown_rendered(page, reply)

    copy = reply.locator(".code-bar button")
    assert copy.inner_text() == "Copy"
    copy.click()
    page.wait_for_function("document.querySelector('.code-bar button').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"

    page.reload()
    page.wait_for_selector("#status.connected")
    assert page.locator(".msg").count() == 2
    assert_markdown_rendered(page, page.locator(".msg.assistant").last)
    page.context.close()


def test_a_reply_with_html_or_javascript_links_runs_no_script(chromium, server):
    page = new_page(chromium, "desktop")
    log_in(page, server)
    start_chat(page, server)
    send(page, XSS)
    for when in ("streamed", "history"):
        reply = page.locator(".msg.assistant").last
        assert page.evaluate("typeof window.__xss") == "undefined", when
        assert reply.locator("script, img, [onerror]").count() == 0, when
        # The reply's own HTML is shown as text; the javascript: link keeps its text and loses its href.
        assert reply.inner_text() == ('echo: <img src=x onerror="window.__xss=1"> click '
                                      "<script>window.__xss=3</script> [context=1]"), when
        link = reply.locator("a")
        assert (link.inner_text(), link.get_attribute("href")) == ("click", None), when
        link.click()
        assert page.evaluate("typeof window.__xss") == "undefined", when
        assert page.locator(".msg.user").last.inner_text() == XSS
        page.reload()
        page.wait_for_selector("#status.connected")
    page.context.close()


def wait_streaming(page):
    """The reply bubble that is streaming, once it shows a few words and the Stop button."""
    page.wait_for_function("(document.querySelector('.msg.assistant.streaming .body')?.textContent || '')"
                           ".split(' ').length > 3")
    assert page.locator("#stop").is_visible()
    return page.locator(".msg.assistant").nth(page.locator(".msg.assistant").count() - 1)


def assert_stopped(page, reply, text_sent: str) -> str:
    """The stopped bubble keeps its partial text and says so; the partial text."""
    page.locator(".msg.assistant.stopped .end-note").wait_for()
    assert reply.locator(".end-note").inner_text() == "Stopped"
    expect(reply.locator(".end-note")).to_be_in_viewport()  # the log followed the reply to its end
    assert page.locator(".msg.failed").count() == 0
    partial = reply.locator(".body").inner_text()
    full = f"echo: {text_sent} [context=1]"
    assert partial.startswith("echo: word0") and full.startswith(partial) and len(partial) < len(full)
    assert page.locator("#stop").is_hidden()
    return partial


def test_keyboard_only_send_stop_with_tab_and_escape(chromium, server):
    page = new_page(chromium, "desktop")
    log_in(page, server)
    start_chat(page, server)
    page.locator("body").focus()
    for _ in range(12):  # the composer is reached with Tab alone, through the controls before it
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "content":
            break
    assert page.evaluate("document.activeElement.id") == "content"
    # Keyboard focus is visible: the 3 px ring of base.css.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.type(LONG)
    page.keyboard.press("Enter")
    page.locator(".msg.user", has_text="word199").wait_for()
    reply = wait_streaming(page)
    page.keyboard.press("Escape")
    partial = assert_stopped(page, reply, LONG)
    assert page.evaluate("document.activeElement.id") == "content"

    # Stop is reached by Tab from the composer (Send, then Stop) and pressed with Enter.
    page.keyboard.type(LONG)
    page.keyboard.press("Enter")
    second = page.locator(".msg.assistant").nth(1)
    wait_streaming(page)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "stop"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Enter")
    assert_stopped(page, second, LONG)

    page.reload()  # the partial replies stay as the runs left them
    page.wait_for_selector("#status.connected")
    assert page.locator(".msg.assistant").first.inner_text() == partial
    page.context.close()


def test_the_stop_button_on_a_phone(chromium, server):
    page = new_page(chromium, "phone")
    log_in(page, server)
    start_chat(page, server)
    page.fill("#content", LONG)
    page.click("#send")
    reply = wait_streaming(page)
    check_page(page, "chat-streaming")
    page.click("#stop")
    assert_stopped(page, reply, LONG)
    check_page(page, "chat-stopped")
    page.context.close()


DESK_APP = '''
import asyncio

from betaassi_django.models import BaseAssistant
from betaassi_django.tools import openai_function


@openai_function
async def get_weather(city: str) -> dict:
    """The current weather in a city."""
    await asyncio.sleep(1.5)
    return {"city": city, "temperature": 21}


@openai_function
def open_ticket(summary: str) -> str:
    """Open a support ticket."""
    raise RuntimeError("the ticket system is down")


class WeatherDesk(BaseAssistant):
    """You answer weather questions with your tools."""

    function_tools = [get_weather, open_ticket]
'''


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory):
    """A server whose project has an assistant class with function tools, its model the fake upstream."""
    root = tmp_path_factory.mktemp("deskproject")
    (root / "chatdesk").mkdir()
    (root / "chatdesk" / "__init__.py").write_text("")
    (root / "chatdesk" / "models.py").write_text(DESK_APP)
    (root / "desk_settings.py").write_text("from project.settings import *\n"
                                           "INSTALLED_APPS = [*INSTALLED_APPS, 'chatdesk']\n")
    with FakeUpstream() as fake, scratch_database_url(_database_url()) as url:
        env = {"PYTHONPATH": f"{root}:{settings.BASE_DIR}", "DJANGO_SETTINGS_MODULE": "desk_settings",
               "BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_RESPONDER": "openai",
               "BETAASSI_UPSTREAM_API": "responses", "BETAASSI_UPSTREAM_BASE_URL": fake.base_url,
               "BETAASSI_UPSTREAM_API_KEY": "sk-test", "BETAASSI_UPSTREAM_MAX_RETRIES": "0"}
        live = LiveServer(url, env=env, cwd=settings.BASE_DIR)
        live.manage("migrate", "--run-syncdb", "--noinput", "-v", "0")  # the app has no migrations
        with live:
            live.manage("shell", "-c", "from chatdesk.models import WeatherDesk; "
                                       "WeatherDesk.objects.create(name='Weather desk', model='gpt-test')")
            live.demo = live.demo_login()
            live.fake = fake
            yield live
        assert fake.violations == []


def test_the_page_shows_which_function_runs_and_how_it_ended(chromium, desk_server):
    desk_server.fake.script(Calls([("get_weather", '{"city": "Paris"}'), ("open_ticket", '{"summary": "cold"}')],
                                  text=["Let me ", "check."]),
                            Text(["It is **21 °C** ", "in Paris."]))
    page = new_page(chromium, "desktop")
    log_in(page, desk_server)
    start_chat(page, desk_server, "Weather desk")
    page.fill("#content", "Is it warm in Paris?")
    page.press("#content", "Enter")
    lines = page.locator(".msg.assistant .tools li")
    assert page.inner_text("#session-info").startswith("Weather desk ·")
    # get_weather takes 1.5 s: it is shown running while open_ticket has already failed.
    page.locator(".tools li.running", has_text="Calling get_weather…").wait_for()
    # The text before the calls completed as a message of its own; the run goes on, so Stop stays offered.
    assert page.locator(".msg.assistant .body").first.inner_text() == "Let me check."
    assert page.locator("#stop").is_visible()
    page.locator(".tools li.failed", has_text="open_ticket failed").wait_for()
    page.locator(".tools li.done", has_text="get_weather done").wait_for()
    assert sorted(lines.all_inner_texts()) == ["get_weather done", "open_ticket failed"]
    reply = page.locator(".msg.assistant:not(.streaming)").last
    reply.locator(".body strong", has_text="21 °C").wait_for()
    assert reply.locator(".body").inner_text() == "It is 21 °C in Paris."
    assert page.locator(".msg.assistant .body").all_inner_texts() == ["Let me check.", "It is 21 °C in Paris."]
    check_page(page, "chat-tools")
    page.set_viewport_size(VIEWPORTS["phone"])
    check_page(page, "chat-tools")
    page.context.close()


#: Records the animation frame of every Markdown render the chat page makes, by wrapping markdown.js's render as
#: chat.js picks it up. Frames are numbered by the page's own requestAnimationFrame callbacks: under load headless
#: Chromium can run two of them at one ``document.timeline.currentTime``, which made a time the wrong frame id.
COUNT_RENDERS = """
let wrapped, frame = 0;
window.__renders = [];
const realFrame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (callback) => realFrame((time) => { frame += 1; return callback(time); });
Object.defineProperty(window, "betaassiMarkdown", {configurable: true, get: () => wrapped,
  set: (real) => { wrapped = {render: (...args) => {
    window.__renders.push(frame); return real.render(...args); }}; }});
"""


def test_a_fast_reply_is_rendered_once_per_frame_not_once_per_delta(chromium, desk_server):
    words = [f"**w{i}** " for i in range(200)]
    desk_server.fake.script(Text(words, delay=0.005))  # about a second of deltas
    page = new_page(chromium, "desktop")
    page.add_init_script(COUNT_RENDERS)
    deltas = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: deltas.append(1) if '"message.delta"' in payload else None))
    log_in(page, desk_server)
    start_chat(page, desk_server, "Weather desk")
    page.evaluate("window.__renders = []")
    page.fill("#content", "Count your words.")
    page.press("#content", "Enter")
    page.locator(".msg.assistant.streaming").wait_for()
    # A busy page (a slow phone): the deltas that arrive meanwhile wait, then come in one frame's time.
    page.evaluate("() => { const end = performance.now() + 400; while (performance.now() < end); }")
    reply = page.locator(".msg.assistant").last
    page.locator(".msg.assistant:not(.streaming) strong", has_text="w199").wait_for()
    assert reply.locator("strong").count() == 200
    frames = page.evaluate("window.__renders")
    assert len(deltas) >= 50, len(deltas)  # the run engine passed them on one by one, not in a few lumps
    assert len(frames) == len(set(frames)), "two renders in one frame"
    assert 1 <= len(frames) < len(deltas), (len(frames), len(deltas))  # several deltas shared a frame
    page.context.close()


VIEWER = '''
from django.contrib.auth.models import Permission, User
if not User.objects.filter(username="viewer").exists():
    viewer = User.objects.create_user("viewer", password="viewer-pass-1")
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_session", content_type__app_label="betaassi_django"))
'''


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_a_read_only_viewer_watches_the_owners_reply_and_cannot_send_or_stop(chromium, server, size):
    """Someone with view_session on another user's session: the page fits and passes axe, the composer is
    disabled, no Stop is offered (a reader may not cancel), and the owner's reply streams in as it does for them."""
    owner = new_page(chromium, size)
    log_in(owner, server)
    start_chat(owner, server)
    server.manage("shell", "-c", VIEWER)
    viewer = new_page(chromium, size)
    viewer.goto(server.url + "/accounts/login/")
    viewer.fill("#id_username", "viewer")
    viewer.fill("#id_password", "viewer-pass-1")
    viewer.click("#login")
    viewer.wait_for_url(server.url + "/")
    viewer.goto(owner.url)
    viewer.wait_for_selector("#status.connected")
    assert viewer.locator("#read-only").inner_text().startswith(f"Read-only: this is {server.demo[0]}'s session.")
    assert viewer.locator("#content").is_disabled() and viewer.locator("#send").is_disabled()

    owner.fill("#content", LONG)
    owner.press("#content", "Enter")
    viewer.locator(".msg.assistant.streaming").wait_for()
    assert owner.locator("#stop").is_visible() and not viewer.locator("#stop").is_visible()
    viewer.keyboard.press("Escape")  # Escape is the owner's stop, not a reader's
    check_page(viewer, "chat-read-only")
    owner.locator("#stop").click()
    for page in (owner, viewer):
        page.locator(".msg.assistant.stopped .end-note", has_text="Stopped").wait_for()
    assert viewer.locator(".msg.assistant .body").inner_text() == owner.locator(".msg.assistant .body").inner_text()
    assert viewer.locator("#notice").inner_text() == ""  # no run.cancel was sent, so no read_only error came back
    owner.context.close()
    viewer.context.close()
