"""Run the project under a real daphne server, for tests and benchmarks.

``LiveServer`` starts ``daphne`` in a subprocess on its own database (migrated
with ``manage.py migrate``) and creates an API key with
``manage.py create_api_key``, exactly as an operator would.
``scratch_database_url`` makes that database next to the one in use: a file
for SQLite, a fresh database on the same server for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import environ
import httpx2

#: The key of every server this process starts, unless the environment has one: servers that share a
#: database share logins.
_SECRET_KEY = secrets.token_urlsafe(50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scratch_database_url(like_url: str) -> Iterator[str]:
    """A new empty database of the same kind as ``like_url``, dropped afterwards."""
    config = environ.Env.db_url_config(like_url)
    if "sqlite" in config["ENGINE"]:
        with tempfile.TemporaryDirectory(prefix="betaassi-live-") as folder:
            yield f"sqlite:///{folder}/live.sqlite3"
        return
    import psycopg

    name = f"betaassi_live_{uuid.uuid4().hex[:12]}"
    admin = {
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "dbname": "postgres",
    }
    with psycopg.connect(**{k: v for k, v in admin.items() if v}, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield like_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(**{k: v for k, v in admin.items() if v}, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: What ``LiveServer.prepare`` runs: the two management commands, as ``manage.py`` would run them.
_PREPARE = """
import django
from django.core.management import call_command
django.setup()
call_command("migrate", interactive=False, verbosity=0)
call_command("create_api_key", "live-server")
"""


class LiveServer:
    """``daphne`` serving ``asgi_app`` on 127.0.0.1 with its own database."""

    def __init__(
        self,
        database_url: str,
        *,
        asgi_app: str = "project.asgi:application",
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.asgi_app = asgi_app
        self.cwd = str(cwd or os.getcwd())
        # The project as an operator runs it (DEBUG off, a real SECRET_KEY), whatever settings the caller (a test
        # run) uses itself; daphne serves the static files too, for the browser tests' admin pages.
        self.env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1",
                    "DJANGO_SETTINGS_MODULE": "project.settings", "SERVE_STATIC": "true", **(env or {})}
        self.env.setdefault("SECRET_KEY", _SECRET_KEY)
        self.process: subprocess.Popen | None = None
        self.api_key = ""
        self.log_path = Path(tempfile.mkstemp(prefix="betaassi-daphne-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Where the openai SDK points: the /v1 API."""
        return f"{self.url}/v1"

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def prepare(self) -> str:
        """``manage.py migrate`` then ``manage.py create_api_key live-server``, in one process (Django's start-up
        is most of each command's time); returns the key."""
        done = subprocess.run([sys.executable, "-c", _PREPARE], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"migrate and create_api_key failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1]

    def start(self, timeout: float = 60) -> LiveServer:
        self.api_key = self.prepare()
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), self.asgi_app],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log()}")
            try:
                urlopen(f"{self.base_url}/assistants", timeout=2)
            except HTTPError:
                return self  # any HTTP answer (401 here) means it serves
            except (URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not answer on {self.url} within {timeout}s:\n{self.log()}")

    def demo_login(self) -> tuple[str, str]:
        """``manage.py setup_demo`` on this server's database: the demo user's name and password."""
        out = self.manage("setup_demo")
        match = re.search(r"user (\S+)  password (\S+)", out)
        if match is None:
            raise RuntimeError(f"setup_demo printed no new login (the demo user existed):\n{out}")
        return match[1], match[2]

    def login(self, username: str, password: str) -> httpx2.Client:
        """An HTTP client logged in through the login page, as a browser would be (CSRF included)."""
        from betaassi_django.client import tls_context

        web = httpx2.Client(base_url=self.url, headers={"Referer": self.url + "/"}, verify=tls_context())
        web.get("/accounts/login/").raise_for_status()
        done = web.post("/accounts/login/", data={"username": username, "password": password,
                                                  "csrfmiddlewaretoken": web.cookies["csrftoken"]})
        if done.status_code != 302:
            raise RuntimeError(f"login as {username} failed: {done.status_code}")
        return web

    def websocket_headers(self, web: httpx2.Client) -> dict[str, str]:
        """What a browser on this server's pages sends with a WebSocket handshake: its cookies and origin."""
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in web.cookies.items()), "Origin": self.url}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server, as the OOM killer or a failed host would: nothing of it runs any more."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RecordingTransport(httpx2.BaseTransport):
    """Records every request an openai client sends, as ``(method, path)``: how tests and benchmarks count
    backend calls."""

    def __init__(self, inner: httpx2.BaseTransport, calls: list[tuple[str, str]]) -> None:
        self.inner, self.calls = inner, calls

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.calls.append((request.method, request.url.path))
        return self.inner.handle_request(request)


def counting_client(**options):
    """A client of the configured backend (``client.build_client``, no retries) and the list its requests are
    recorded in."""
    from betaassi_django.client import build_client

    calls: list[tuple[str, str]] = []
    return build_client(max_retries=0, wrap_transport=lambda inner: RecordingTransport(inner, calls), **options), calls
