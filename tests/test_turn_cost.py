"""What a turn costs: ``ask`` returns as its run ends (no polling), and a turn opens no database connection.

The embedded backend's turns read the run's events from the engine in this process (``client.run_events``);
the remote backend's stream them with the SDK. Both send exactly one request for a turn without tools.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.backends.signals import connection_created
from django.db.backends.utils import CursorWrapper

from betaassi_django import ws_database
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _session(alice) -> Session:
    Support.objects.create(name="support").sessions.create("s-1", owner=alice)
    Processor().run_once()
    return Session.objects.get(session_id="s-1")


def test_ask_sends_one_request_and_returns_the_whole_reply(backend, alice):
    session = _session(alice)
    backend.reset()
    assert session.ask("one") == "echo: one [context=1]"
    assert backend.requests == [("POST", f"/v1/threads/{session.thread_id}/runs")]  # no poll, no message list
    backend.reset()
    assert session.ask("two") == "echo: two [context=3]"
    assert backend.requests == [("POST", f"/v1/threads/{session.thread_id}/runs")]


def test_astream_sends_one_request(backend, alice):
    session = _session(alice)
    backend.reset()

    async def turn() -> str:
        return "".join([piece async for piece in session.astream("hello")])

    assert asyncio.run(turn()) == "echo: hello [context=1]"
    assert backend.requests == [("POST", f"/v1/threads/{session.thread_id}/runs")]


def _pool_connections() -> int:
    """Connections the PostgreSQL pool opened so far (a checkout from the pool is not a new connection, though
    Django sends ``connection_created`` for it)."""
    pool = connection.pool
    return pool.get_stats().get("connections_num", 0) if pool is not None else 0


def test_a_turn_opens_no_database_connection(settings, alice):
    """After a first turn (each thread's connection is opened once), further turns open none: the engine's
    database threads and the callers keep theirs (SQLite); on PostgreSQL they come from the pool."""
    settings.BETAASSI_BACKEND = "embedded"
    session = _session(alice)
    loop = asyncio.new_event_loop()

    async def turn(text: str) -> str:
        return "".join([piece async for piece in session.astream(text)])

    try:
        assert session.ask("warm") == "echo: warm [context=1]"
        assert loop.run_until_complete(turn("warm")) == "echo: warm [context=3]"
        opened = []

        def record(sender, connection, **kwargs) -> None:
            # The run engine's heartbeat opens and closes one of its own every few seconds, turns or not.
            if not threading.current_thread().name.startswith("betaassi-run-heartbeat"):
                opened.append(connection.alias)

        connection_created.connect(record)
        pooled = connection.vendor == "postgresql" and connection.pool is not None
        before = _pool_connections() if pooled else 0
        try:
            for n in range(3):
                # The thread grows by two messages a turn: the echo counts what the model was sent.
                assert session.ask(f"ask {n}") == f"echo: ask {n} [context={4 * n + 5}]"
                assert loop.run_until_complete(turn(f"stream {n}")) == f"echo: stream {n} [context={4 * n + 7}]"
        finally:
            connection_created.disconnect(record)
        if pooled:
            assert _pool_connections() == before
        else:
            assert opened == []
    finally:
        loop.close()


class _Statements:
    """Every statement any thread of the process sends (BEGIN and SAVEPOINT included, where the backend sends them
    as statements: SQLite), but the run engine's heartbeat, which beats on its own clock."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self._lock = threading.Lock()

    def install(self, monkeypatch) -> None:
        original = CursorWrapper._execute_with_wrappers

        def counted(cursor, sql, *args, **kwargs):
            if not threading.current_thread().name.startswith("betaassi-run-heartbeat"):
                with self._lock:
                    self.sql.append(sql)
            return original(cursor, sql, *args, **kwargs)

        monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counted)

    def take(self) -> list[str]:
        with self._lock:
            taken, self.sql = self.sql, []
        return taken


#: Statements of one turn without tools, by database: the turn quota (1: room in the window, for a user who is not
#: exempt), creating the run with its user message (BEGIN on SQLite; the thread, the assistant and whether the
#: thread has an active run in one SELECT; the message; the run), starting it with its reply message and step
#: (BEGIN; a conditional UPDATE, still queued with the metadata it was created with, so the run as created is not
#: read again; the thread's messages; 2 INSERTs), nothing at the first delta, the end
#: (BEGIN; the run in a conditional UPDATE, still in_progress with its metadata; the message; the step). The
#: session's ``touch`` (one UPDATE) only in a minute the session was not touched in yet (``ws_database.touch_due``).
TURN_STATEMENTS = {"sqlite": 14, "postgresql": 11}


@pytest.mark.parametrize("minutes_later", [0, 1])
def test_a_turn_sends_a_known_number_of_statements(settings, alice, monkeypatch, minutes_later):
    settings.BETAASSI_BACKEND = "embedded"
    session = _session(alice)
    loop = asyncio.new_event_loop()

    async def turn(text: str) -> str:
        return "".join([piece async for piece in session.astream(text)])

    statements = _Statements()
    try:
        assert session.ask("warm") == "echo: warm [context=1]"
        assert loop.run_until_complete(turn("warm")) == "echo: warm [context=3]"
        touched = Session.objects.get(pk=session.pk).touched_at
        assert touched is not None and session.touched_at is not None
        clock = [session.touched_at.replace(second=59) + timedelta(minutes=minutes_later)]
        monkeypatch.setattr(ws_database, "_now", lambda: clock[0])
        statements.install(monkeypatch)
        assert session.ask("ask") == "echo: ask [context=5]"
        asked = statements.take()
        clock[0] += timedelta(minutes=minutes_later)
        assert loop.run_until_complete(turn("stream")) == "echo: stream [context=7]"
        streamed = statements.take()
    finally:
        loop.close()
    expected = TURN_STATEMENTS[connection.vendor] + (1 if minutes_later else 0)
    assert (len(asked), len(streamed)) == (expected, expected), "\n".join([*asked, "--", *streamed])
    # written again in a new minute; in the same minute, the stored time is the minute's first turn's
    stored = Session.objects.get(pk=session.pk).touched_at
    assert (stored > touched) if minutes_later else (stored == touched)
