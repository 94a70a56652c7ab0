"""docs/own-project.md, followed by a new user: the wheel with the pins, ``startproject``, the page's files.

The snippet files under docs/snippets/ are the very files the page includes; they are applied verbatim, as the page
says (appended to settings.py, urls.py and asgi.py replaced, production.py added). Nothing of this checkout is on
the project's path: only the installed wheel and the pinned requirements.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import httpx2
import pytest
import websockets

from betaassi_django.testing import free_port, scratch_database_url
from tests.conftest import _database_url
from tests.test_packaging import ROOT, build_distributions

pytestmark = pytest.mark.slow

SNIPPETS = ROOT / "docs" / "snippets"
PASSWORD = "wheel-test-" + secrets.token_urlsafe(12)
#: What the startproject settings print when every betaassi check passes.
NO_ISSUES = "System check identified no issues (0 silenced).\n"


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
def venv() -> Iterator[Path]:
    """This run's wheel, installed afresh into a virtualenv of the pinned requirements; its bin folder.

    The virtualenv is kept between test runs (installing the requirements is 30 s, the wheel 2 s), named by what
    decides its contents: the pins, the package's metadata and the Python version. A lock keeps two test runs
    from reinstalling the wheel under each other.
    """
    # The pins as constraints (a constraint names no extras: psycopg[binary,pool] is psycopg there).
    pins = re.sub(r"\[[^\]]*\]", "", (ROOT / "requirements.txt").read_text())
    key = hashlib.sha256("\0".join([pins, (ROOT / "pyproject.toml").read_text(), sys.version]).encode()).hexdigest()
    folder = Path(tempfile.gettempdir()) / f"betaassi-wheel-venv-{key[:16]}"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        python, wheel = folder / "bin" / "python", str(build_distributions()[1])
        if not (folder / "installed").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a run that stopped midway
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
            (folder / "constraints.txt").write_text(pins)
            _pip(python, wheel, "-c", str(folder / "constraints.txt"))
            (folder / "installed").touch()
        else:  # the requirements are there; the package is replaced by this run's build, whatever it was
            _pip(python, "--force-reinstall", "--no-deps", wheel)
        yield folder / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """A shell's environment without this test run's settings, database, Redis or betaassi variables."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"}}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Project:
    """The startproject folder and how its user runs commands in it."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder, self.bin = folder, bin_dir

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin / "python"), "manage.py", *args], cwd=self.folder,
                              env=env or clean_env(), capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def shell(self, code: str) -> str:
        return self.run("shell", "-v", "0", "-c", code).stdout


#: What the page tells the reader to do with each file, as the ``project`` fixture does it.
STEPS = {
    "settings.py": "Append this to the end of `mysite/settings.py`",
    "urls.py": "Replace `mysite/urls.py` with:",
    "asgi.py": "Replace `mysite/asgi.py` with:",
    "production.py": "Add `mysite/production.py`",
}


def test_the_page_includes_every_snippet_right_after_its_instruction():
    page = (ROOT / "docs" / "own-project.md").read_text()
    assert sorted(p.name for p in SNIPPETS.iterdir()) == sorted(STEPS)
    for name, instruction in STEPS.items():
        after = page.split(instruction, 1)[1]
        assert after.index(f'--8<-- "docs/snippets/{name}"') < after.find("\n## "), name


@pytest.fixture(scope="module")
def project(venv, tmp_path_factory) -> Project:
    """``django-admin startproject mysite``, then the page's steps with its files, and ``migrate``."""
    where = tmp_path_factory.mktemp("own-project")
    subprocess.run([str(venv / "django-admin"), "startproject", "mysite"], cwd=where, env=clean_env(),
                   check=True, timeout=60)
    folder = where / "mysite"
    package = folder / "mysite"
    with (package / "settings.py").open("a") as settings:  # "append to the end of mysite/settings.py"
        settings.write("\n" + (SNIPPETS / "settings.py").read_text())
    shutil.copy(SNIPPETS / "urls.py", package / "urls.py")  # "replace mysite/urls.py"
    shutil.copy(SNIPPETS / "asgi.py", package / "asgi.py")  # "replace mysite/asgi.py"
    shutil.copy(SNIPPETS / "production.py", package / "production.py")  # "add mysite/production.py"
    project = Project(folder, venv)
    project.run("migrate", "--noinput", "-v", "0")
    return project


def test_check_reports_nothing_for_the_documented_settings(project):
    assert project.run("check").stdout == NO_ISSUES
    # The app comes from the wheel in the virtualenv, not from this checkout.
    installed = Path(project.shell("import betaassi_django; print(betaassi_django.__file__)").strip())
    assert installed == project.bin.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages" / "betaassi_django" / "__init__.py"


def test_check_deploy_passes_with_the_production_settings(project):
    """On the PostgreSQL pass, a database of its own, migrated and checked; on SQLite, the same settings with
    a PostgreSQL URL that ``check --deploy`` (no ``--database``) never connects to."""
    on_postgres = "postgres" in _database_url()
    databases = scratch_database_url(_database_url()) if on_postgres else contextlib.nullcontext(
        "postgres://postgres@127.0.0.1:5432/betaassi_own_project_unused")
    with databases as database_url:
        env = clean_env(DJANGO_SETTINGS_MODULE="mysite.production", SECRET_KEY=secrets.token_urlsafe(50),
                        ALLOWED_HOSTS="chat.example.com", CSRF_TRUSTED_ORIGINS="https://chat.example.com",
                        DATABASE_URL=database_url, REDIS_URL="redis://127.0.0.1:6379/9")
        database = []
        if on_postgres:
            project.run("migrate", "--noinput", "-v", "0", env=env)
            database = ["--database", "default"]
        done = project.run("check", "--deploy", "--fail-level", "WARNING", *database, env=env)
    assert done.stdout == NO_ISSUES, done.stdout + done.stderr


def test_process_publish_queue_prints_a_line_per_applied_event_without_logging(project):
    """The production processor, run by hand on a session published while no server runs."""
    assistant_id, event_id = project.shell(
        "from django.contrib.auth.models import User\n"
        "from betaassi_django.models import Assistant\n"
        "owner = User.objects.create_user('queue-owner')\n"
        "assistant = Assistant.objects.create(name='Queue', model='gpt-4o')\n"
        "print(assistant.id, assistant.sessions.create('s1', owner=owner))\n"
    ).split()
    done = project.run("process_publish_queue", "--once")
    (line,) = done.stderr.splitlines()
    assert line.split(" betaassi_django.publishing ", 1)[1] == (
        f"event={event_id} assistant={assistant_id} op=session.create session=s1 status=applied reason=-")
    assert done.stdout == "processed 1 event(s)\n"


@pytest.fixture(scope="module")
def server(project) -> Iterator[str]:
    """daphne on a free port with the development settings, as the page starts it."""
    port = free_port()
    log = project.folder / "daphne.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(project.bin / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                                    "mysite.asgi:application"], cwd=project.folder, env=clean_env(),
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                urlopen(url + "/accounts/login/", timeout=2)
                break
            except HTTPError:
                break
            except (URLError, OSError):
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def web(project, server) -> httpx2.Client:
    """A superuser (``createsuperuser --noinput``) logged in through the app's login page."""
    project.run("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com",
                env=clean_env(DJANGO_SUPERUSER_PASSWORD=PASSWORD))
    web = httpx2.Client(base_url=server, headers={"Referer": server + "/"}, timeout=30)
    page = web.get("/accounts/login/")
    assert page.status_code == 200, page.text[:2000]
    done = web.post("/accounts/login/", data={"username": "admin", "password": PASSWORD,
                                              "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert (done.status_code, done.headers["location"]) == (302, "/")  # the session list
    return web


def test_the_admin_serves_its_css_and_adds_an_assistant(web):
    assert web.get("/admin/betaassi_django/assistant/add/").status_code == 200
    css = web.get("/static/admin/css/base.css")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css")
    done = web.post("/admin/betaassi_django/assistant/add/", data={
        "name": "Helper", "description": "", "model": "gpt-4o", "instructions": "", "tools": "[]",
        "temperature": "", "top_p": "", "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0",
        "sessions-MIN_NUM_FORMS": "0", "sessions-MAX_NUM_FORMS": "1000",
        "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert (done.status_code, done.headers["location"]) == (302, "/admin/betaassi_django/assistant/"), done.text[:2000]
    listing = web.get("/admin/betaassi_django/assistant/")
    assert "Helper" in listing.text


def test_a_session_started_from_the_page_chats_over_the_websocket(web, server):
    page = web.get("/")
    assert page.status_code == 200
    helper = re.search(r'<option value="([^"]+)"[^>]*>[^<]*Helper', page.text)
    assert helper, page.text[:3000]
    done = web.post("/sessions/start/", data={"assistant": helper[1], "kind": "default",
                                              "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert done.status_code == 302, done.text[:2000]
    match = re.fullmatch(rf"/chat/{helper[1]}/(chat-[0-9a-f]{{16}})/", done.headers["location"])
    assert match, done.headers["location"]  # applied by the in-server processor: the chat page, not a warning
    assert web.get(done.headers["location"]).status_code == 200

    async def chat() -> list[dict]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in web.cookies.items()), "Origin": server}
        path = f"/ws/assistants/{helper[1]}/sessions/{match[1]}/"
        async with websockets.connect(server.replace("http", "ws") + path, additional_headers=headers) as socket:
            frames = [json.loads(await asyncio.wait_for(socket.recv(), 20))]
            await socket.send(json.dumps({"type": "user.message", "content": "hello"}))
            while frames[-1]["type"] not in {"message.completed", "run.failed"}:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
            return frames

    frames = asyncio.run(chat())
    # The reply streams as one or more deltas (the server joins the words that are ready when it sends).
    kinds = [f["type"] for f in frames]
    assert [k for i, k in enumerate(kinds) if k != "message.delta" or kinds[i - 1] != k] == [
        "session.ready", "message.created", "run.started", "message.delta", "message.completed"], frames
    assert (frames[1]["message"]["role"], frames[1]["message"]["content"]) == ("user", "hello")
    assert {f["run_id"] for f in frames[2:]} == {frames[2]["run_id"]}
    assert "".join(f["delta"] for f in frames if f["type"] == "message.delta") == "echo: hello [context=1]"
    assert frames[-1]["message"]["content"] == "echo: hello [context=1]"


def readme_block(marker: str, language: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in README.md."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"^<!-- {marker} -->\n```{language}\n(.*?)^```$", readme, re.S | re.M)
    assert found, f"README.md has no ```{language} block right after <!-- {marker} -->"
    return found[1]


def test_the_readme_sdk_example_prints_its_documented_output(project, server, web):
    key = project.run("create_api_key", "sdk-example").stdout.strip().splitlines()[-1]
    code = readme_block("sdk-example", "python")
    literal = 'OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-betaassi-...")'
    assert code.count(literal) == 1, code
    code = code.replace(literal, f'OpenAI(base_url="{server}/v1", api_key="{key}")')
    done = subprocess.run([str(project.bin / "python"), "-c", code], cwd=project.folder.parent, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == readme_block("sdk-example-output", "text")
    assert done.stderr == ""  # the example's filter silences the SDK's deprecation warnings


def test_logout_goes_back_to_the_login_page(web):
    done = web.post("/accounts/logout/", data={"csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert (done.status_code, done.headers["location"]) == (302, "/accounts/login/")
    assert web.get("/").headers["location"] == "/accounts/login/?next=/"
