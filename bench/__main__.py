"""``make bench``: every benchmark on scratch databases, then one table.

The database named by DATABASE_URL (SQLite by default) is never touched: the
benchmarks run on a scratch database of the same kind, and the HTTP paths on a
daphne server with a scratch database of its own. BENCH_N sets the number of
measured operations per path (default 300). One part alone: ``python -m bench consumers`` (the consumers' rows,
no daphne), ``turns`` (bench/turns.py: a chat turn, ours, the floor and the peer), ``scale`` (100,000 sessions and
1,000 connections; ``BENCH_SCALE_PART=sessions`` or ``connections`` for one of them), ``idle`` (the processors'
idle CPU with 1,000 assistants), ``api`` (the API round trips and the models' write-through, with a daphne),
``publishing`` (the publish queue's rows), ``upstream`` (the openai responder's rows), ``search`` (vector
store search at 10,000 chunks, bench/search.py) and ``websockets`` (K sessions on a daphne).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def scratch_django(like: str) -> Iterator[None]:
    """Django set up on a migrated scratch database of the kind ``like`` names; its connections closed after."""
    from betaassi_django.testing import scratch_database_url

    with scratch_database_url(like) as local_url:
        os.environ["DATABASE_URL"] = local_url
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from betaassi_django.assistants_api.engine import engine

        call_command("migrate", run_syncdb=True, verbosity=0)
        try:
            yield
        finally:
            engine.close_connections()
            connections.close_all()


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # one table, not a log line per event the benchmarks apply
    like = os.environ.get("DATABASE_URL") or f"sqlite:///{ROOT / 'db.sqlite3'}"
    n = int(os.environ.get("BENCH_N", "300"))
    part = sys.argv[1] if sys.argv[1:] else "all"
    if part not in PARTS:
        sys.exit(f"usage: python -m bench [{' | '.join(PARTS)}]")
    PARTS[part](like, n)
    from .report import print_table

    print(f"database: {like.split(':', 1)[0]}, {n} measured operations per path")
    print_table()


def everything(like: str, n: int) -> None:
    from betaassi_django.testing import LiveServer, scratch_database_url

    with scratch_django(like), scratch_database_url(like) as server_url, LiveServer(server_url, cwd=ROOT) as server:
        from . import idle, scale, scale_sessions, websockets  # they import models: once Django is set up

        run_all(server, n)
        scale_sessions.run()  # 100,000 sessions on one assistant (in-process)
    websockets.run(like, ROOT)  # its own daphne and scratch database: K concurrent sessions
    scale.connections(like, ROOT)  # 1,000 WebSocket connections on one daphne
    idle.run(like, ROOT)  # the processors' idle CPU with 1,000 assistants: their own daphne / process, databases


def run_all(server, n: int) -> None:
    from . import admin, consumers, publishing, search, turns, upstream

    # First, while no other benchmark's processor or consumer threads are about: every statement of the process
    # counts in a turn's SQL.
    turns.run(n)  # a chat turn: CPU, wall, SQL and connections against the streamed-SDK floor and the peer
    api_rows(server, n, also=admin.run)
    publishing.run(samples=max(20, n // 6))
    consumers.run(samples=max(20, n // 6))
    upstream.run(n)  # the openai responder against a fake upstream on loopback
    search.run(n)  # vector store search at 10,000 chunks: keyword and hybrid against a LIKE scan


def consumers_alone(like: str, n: int) -> None:
    from . import consumers

    with scratch_django(like):
        consumers.run(samples=max(20, n // 6))


def turns_alone(like: str, n: int) -> None:
    from . import turns

    with scratch_django(like):
        turns.run(n, like)


def scale_alone(like: str, n: int) -> None:
    part = os.environ.get("BENCH_SCALE_PART", "")
    if part != "connections":
        with scratch_django(like):
            from . import scale_sessions

            scale_sessions.run()
    if part != "sessions":
        from . import scale

        scale.connections(like, ROOT)


def idle_alone(like: str, n: int) -> None:
    from . import idle

    idle.run(like, ROOT)


def api_alone(like: str, n: int) -> None:
    """The in-process and HTTP API rows and the model write-through rows (with their daphne)."""
    from betaassi_django.testing import LiveServer, scratch_database_url

    with scratch_django(like), scratch_database_url(like) as server_url, LiveServer(server_url, cwd=ROOT) as server:
        api_rows(server, n)


def api_rows(server, n: int, also=None) -> None:
    """The API round trips and the models' write-through, in process and against ``server``; ``also(recorder, n)``
    runs with the same counting in-process client (the admin rows)."""
    import openai

    from betaassi_django.client import use_clients
    from betaassi_django.testing import counting_client

    from . import api_roundtrip, models

    in_process, recorder = counting_client(backend="embedded")
    http = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    with use_clients(in_process):
        api_roundtrip.run(in_process, http, n)
        models.run(recorder, n, listed=250)
        if also is not None:
            also(recorder, n)
    models.run_remote(server, n)


def publishing_alone(like: str, n: int) -> None:
    with scratch_django(like):
        from . import publishing

        publishing.run(samples=max(20, n // 6))


def upstream_alone(like: str, n: int) -> None:
    with scratch_django(like):
        from . import upstream

        upstream.run(n)


def search_alone(like: str, n: int) -> None:
    with scratch_django(like):
        from . import search

        search.run(n)


def websockets_alone(like: str, n: int) -> None:
    from . import websockets

    websockets.run(like, ROOT)


PARTS = {"all": everything, "consumers": consumers_alone, "turns": turns_alone, "scale": scale_alone,
         "idle": idle_alone, "api": api_alone, "publishing": publishing_alone, "upstream": upstream_alone,
         "search": search_alone, "websockets": websockets_alone}


if __name__ == "__main__":
    main()
