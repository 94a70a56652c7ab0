"""What a turn costs: ``ask`` returns as its run ends (no polling), and a turn opens no database connection.

The embedded backend's turns read the run's events from the engine in this process (``client.run_events``);
the remote backend's stream them with the SDK. Both send exactly one request for a turn without tools.
"""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

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
