"""Fixtures: the official openai SDK against the embedded API, in-process and over HTTP.

``client`` / ``aclient`` are parametrized: each scenario runs once through the
in-process transport (on the test database) and once over real HTTP against a
daphne subprocess on its own database. Every response passes through
``tests.spec`` and is validated against OpenAI's specification.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import openai
import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.spec import AsyncValidatingTransport, ValidatingTransport

pytest_plugins = ["tests.upstream_fixtures"]

#: Seconds between echo deltas on the live server: long enough that a run can be
#: cancelled mid-stream, short enough to keep the suite quick.
LIVE_ECHO_DELAY = "0.01"


def _database_url() -> str:
    return os.environ.get("DATABASE_URL") or "sqlite:///" + str(settings.BASE_DIR / "db.sqlite3")


def pytest_collection_modifyitems(items):
    """In-process scenarios and model tests use the test database, committed: the run engine's thread
    must see it. A test that drives Chromium is marked ``browser``."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "in_process" in (params.get("client"), params.get("aclient")) or "backend" in params:
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(scope="session", autouse=True)
def _close_engine_connections(django_db_setup):
    """The run engine's thread (and the API's SQLite thread) hold their own connections; close them before the
    test database is dropped."""
    yield
    from betaassi_django.assistants_api.engine import engine
    from betaassi_django.assistants_api.http import close_sqlite_executor_connections

    engine.close_connections()
    close_sqlite_executor_connections()


@pytest.fixture(scope="session")
def daphne_server():
    """daphne serving the project over real HTTP, with its own database and API key."""
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env={"BETAASSI_ECHO_DELAY": LIVE_ECHO_DELAY}, cwd=settings.BASE_DIR) as server,
    ):
        yield server


@pytest.fixture
def echo_delay(settings):
    """The in-process engine streams with the same pause as the live server."""
    settings.BETAASSI_ECHO_DELAY = float(LIVE_ECHO_DELAY)


def _sdk_client(kind: str, server: LiveServer | None = None, asynchronous: bool = False, **options):
    """The product's own client factory, with every response validated against the specification."""
    from betaassi_django.client import build_async_client, build_client

    checked = AsyncValidatingTransport if asynchronous else ValidatingTransport
    if server is not None:
        options.update(base_url=server.base_url, api_key=server.api_key)
    build = build_async_client if asynchronous else build_client
    return build(backend="remote" if kind == "http" else "embedded", max_retries=0,
                 wrap_transport=lambda transport: checked(transport, kind), **options)


def http_client(server: LiveServer, **options) -> openai.OpenAI:
    return _sdk_client("http", server, **options)


def in_process_client(**options) -> openai.OpenAI:
    return _sdk_client("in_process", **options)


@pytest.fixture(params=["in_process", "http"])
def client(request, echo_delay) -> openai.OpenAI:
    """The sync SDK client, once per transport."""
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    return _sdk_client(request.param, server)


@pytest.fixture(params=["in_process", "http"])
def aclient(request, echo_delay) -> openai.AsyncOpenAI:
    """The async SDK client, once per transport."""
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    return _sdk_client(request.param, server, asynchronous=True)


def pytest_sessionfinish(session, exitstatus):
    """After a full run, every operation of the specification must have been
    answered (and validated) with a 200 over both transports."""
    config = session.config
    whole_suite = (
        not config.option.keyword
        and not config.option.markexpr
        and all(arg.rstrip("/").endswith("tests") for arg in config.args)
    )
    if not whole_suite or exitstatus != 0:
        return
    from tests.spec import VALIDATED, _operations

    missing = [
        f"{op_id} ({kind})"
        for _, _, op_id, _ in _operations()
        for kind in ("in_process", "http")
        if not any(key[0] == op_id and key[1] == 200 and key[2] == kind for key in VALIDATED)
    ]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    total = sum(VALIDATED.values())
    if reporter:
        reporter.write_line(f"spec: {total} responses and events validated against the OpenAPI specification")
    if missing:
        if reporter:
            reporter.write_line("spec: operations never answered with a validated 200: " + ", ".join(missing))
        session.exitstatus = 1


class Backend:
    """The backend the models talk to, with every request it received."""

    def __init__(self, kind: str, sync_transport, async_transport) -> None:
        self.kind = kind
        self._transports = (sync_transport, async_transport)

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._transports[0].requests + self._transports[1].requests

    def calls(self, method: str | None = None) -> int:
        return sum(1 for m, _ in self.requests if method is None or m == method)

    def reset(self) -> None:
        for transport in self._transports:
            transport.requests.clear()


@pytest.fixture(params=["embedded", "remote"])
def backend(request, settings):
    """The models' backend: the embedded API in-process, or the daphne server as a remote host."""
    from betaassi_django.client import build_async_client, build_client, use_clients

    kind = "in_process" if request.param == "embedded" else "http"
    settings.BETAASSI_BACKEND = request.param
    if request.param == "remote":
        server = request.getfixturevalue("daphne_server")
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = server.base_url, server.api_key
        # The server outlives the test: start from no assistants, as the embedded test database does.
        raw = http_client(server)
        for assistant_id in [a.id for a in raw.beta.assistants.list(limit=100)]:
            raw.beta.assistants.delete(assistant_id)
    transports = []

    def wrap(transport):
        checked = ValidatingTransport(transport, kind)
        transports.append(checked)
        return checked

    def awrap(transport):
        checked = AsyncValidatingTransport(transport, kind)
        transports.append(checked)
        return checked

    sync, async_ = build_client(wrap_transport=wrap, max_retries=0), build_async_client(wrap_transport=awrap,
                                                                                          max_retries=0)
    with use_clients(sync, async_):
        yield Backend(request.param, *transports)


def shared_database_url() -> str:
    """DATABASE_URL of the database the tests use, for subprocesses (commands) to share it."""
    from django.db import connection

    config = connection.settings_dict
    if "sqlite" in config["ENGINE"]:
        return f"sqlite:///{config['NAME']}"
    auth = config["USER"] + (f":{config['PASSWORD']}" if config["PASSWORD"] else "")
    return f"postgres://{auth}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


# -- the admin and the browser ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
#: As root on a machine with no outside network: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium through Playwright; missing, it skips locally and fails in CI."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def make_staff():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("root", "root@example.com", "admin-pass-1")


def client_of(user):
    """Django's test client, logged in (``client`` is the openai SDK in this suite)."""
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def staff():
    return make_staff()


@pytest.fixture
def web(staff):
    """Django's test client logged in as staff (the pages' tests define their own)."""
    return client_of(staff)


@pytest.fixture
def visitor():
    """Django's test client, logged in as nobody (``client`` is the openai SDK in this suite)."""
    from django.test import Client

    return Client()


@pytest.fixture
def alice():
    """An ordinary user with a password, to log in through the login page."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("alice", password="secret-pass-1")


@pytest.fixture
def bob():
    """A second ordinary user: someone else's sessions, ids and runs."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("bob", password="secret-pass-2")


def wait_for_run(client, thread_id: str, run_id: str, timeout: float = 30, interval: float = 0.02):
    """The run once it has left queued / in_progress / cancelling."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status not in ("queued", "in_progress", "cancelling"):
            return run
        time.sleep(interval)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def cancel_after_deltas(client, stream, thread_id: str, deltas: int) -> list[str]:
    """The names of a streamed run's events, cancelling the run when its ``deltas``-th text delta arrives."""
    names = []
    for event in stream:
        names.append(event.event)
        if event.event == "thread.message.delta" and names.count(event.event) == deltas:
            client.beta.threads.runs.cancel(stream.current_run.id, thread_id=thread_id)
    return names


@pytest.fixture
def processor():
    """``process_publish_queue`` as it runs beside the server, woken by publishers in this process."""
    import threading

    from betaassi_django.publishing import notify
    from betaassi_django.publishing.processor import Processor

    stop = threading.Event()

    def serve() -> None:
        from django.db import connection

        try:
            Processor().serve(5.0, stop)
        finally:
            connection.close()  # PostgreSQL drops the test database only once no connection is left

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield
    stop.set()
    notify.local_wake.set()
    thread.join(10)


def start_session_from_page(web) -> tuple[str, str]:
    """Start a session as a user does, through the home page's form on a live server: its assistant's id and its id
    (the form chooses one at random for a user who may not name it)."""
    import re

    page = web.get("/")
    assert page.status_code == 200, page.text[:3000]
    assistant_id = page.text.split('<option value="', 1)[1].split('"', 1)[0]
    done = web.post("/sessions/start/", data={"assistant": assistant_id, "kind": "default",
                                              "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert done.status_code == 302, done.text[:3000]
    match = re.fullmatch(rf"/chat/{assistant_id}/(chat-[0-9a-f]{{16}})/", done.headers["location"])
    assert match, done.headers["location"]
    return assistant_id, match[1]
