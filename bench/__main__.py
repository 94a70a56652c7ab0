"""``make bench``: every benchmark on scratch databases, then one table.

The database named by DATABASE_URL (SQLite by default) is never touched: the
benchmarks run on a scratch database of the same kind, and the HTTP paths on a
daphne server with a scratch database of its own. BENCH_N sets the number of
measured operations per path (default 300). ``python -m bench consumers`` runs the consumers' rows alone (they
need no daphne), ``python -m bench turns`` the chat-turn rows (bench/turns.py: ours, the floor and the peer).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # one table, not a log line per event the benchmarks apply
    from betaassi_django.testing import LiveServer, scratch_database_url

    like = os.environ.get("DATABASE_URL") or f"sqlite:///{ROOT / 'db.sqlite3'}"
    n = int(os.environ.get("BENCH_N", "300"))
    if sys.argv[1:] == ["consumers"]:
        return consumers_alone(like, n)
    if sys.argv[1:] == ["turns"]:
        return turns_alone(like, n)
    if sys.argv[1:] == ["scale"]:
        return scale_alone(like)
    if sys.argv[1:] == ["idle"]:
        return idle_alone(like)
    with scratch_database_url(like) as local_url, scratch_database_url(like) as server_url:
        os.environ["DATABASE_URL"] = local_url
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        with LiveServer(server_url, cwd=ROOT) as server:
            run_all(server, n)
            from django.db import connections

            from . import scale_sessions

            scale_sessions.run()  # 100,000 sessions on one assistant (in-process)

            from betaassi_django.assistants_api.engine import engine

            engine.close_connections()
            connections.close_all()
    from . import websockets

    websockets.run(like, ROOT)  # its own daphne and scratch database: K concurrent sessions
    from . import scale

    scale.connections(like, ROOT)  # 1,000 WebSocket connections on one daphne
    from . import idle

    idle.run(like, ROOT)  # the processors' idle CPU with 1,000 assistants: their own daphne / process, databases
    from .report import print_table

    print(f"database: {like.split(':', 1)[0]}, {n} measured operations per path")
    print_table()


def consumers_alone(like: str, n: int) -> None:
    """``python -m bench consumers``: the consumers' benchmark on a scratch database, then its table."""
    from betaassi_django.testing import scratch_database_url

    with scratch_database_url(like) as local_url:
        os.environ["DATABASE_URL"] = local_url
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from betaassi_django.assistants_api.engine import engine

        from . import consumers

        call_command("migrate", run_syncdb=True, verbosity=0)
        consumers.run(samples=max(20, n // 6))
        engine.close_connections()
        connections.close_all()
    from .report import print_table

    print(f"database: {like.split(':', 1)[0]}, {n} measured operations per path")
    print_table()


def scale_alone(like: str) -> None:
    """``python -m bench scale``: 100,000 sessions (scratch database) and 1,000 connections (its own daphne)."""
    from betaassi_django.testing import scratch_database_url

    with scratch_database_url(like) as local_url:
        os.environ["DATABASE_URL"] = local_url
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from . import scale, scale_sessions

        call_command("migrate", run_syncdb=True, verbosity=0)
        if os.environ.get("BENCH_SCALE_PART", "sessions") != "connections":
            scale_sessions.run()
        connections.close_all()
    if os.environ.get("BENCH_SCALE_PART", "connections") != "sessions":
        scale.connections(like, ROOT)
    from .report import print_table

    print_table()


def idle_alone(like: str) -> None:
    """``python -m bench idle``: the processors' idle CPU with 1,000 assistants and with 1 (bench/idle.py)."""
    from . import idle

    idle.run(like, ROOT)
    from .report import print_table

    print_table()


def turns_alone(like: str, n: int) -> None:
    """``python -m bench turns``: a chat turn against the floor and the peer (bench/turns.py), then its table."""
    from betaassi_django.testing import scratch_database_url

    with scratch_database_url(like) as local_url:
        os.environ["DATABASE_URL"] = local_url
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from betaassi_django.assistants_api.engine import engine

        from . import turns

        call_command("migrate", run_syncdb=True, verbosity=0)
        turns.run(n, like)
        engine.close_connections()
        connections.close_all()
    from .report import print_table

    print(f"database: {like.split(':', 1)[0]}, {n} measured operations per path")
    print_table()


def run_all(server, n: int) -> None:
    import openai

    from betaassi_django.client import use_clients
    from betaassi_django.testing import counting_client

    from . import admin, api_roundtrip, consumers, models, publishing, turns, upstream

    # First, while no other benchmark's processor or consumer threads are about: every statement of the process
    # counts in a turn's SQL.
    turns.run(n)  # a chat turn: CPU, wall, SQL and connections against the streamed-SDK floor and the peer
    in_process, recorder = counting_client(backend="embedded")
    http = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    with use_clients(in_process):
        api_roundtrip.run(in_process, http, n)
        models.run(recorder, n, listed=250)
        admin.run(recorder, n)
    models.run_remote(server, n)
    publishing.run(samples=max(20, n // 6))
    consumers.run(samples=max(20, n // 6))
    upstream.run(n)  # the openai responder against a fake upstream on loopback


if __name__ == "__main__":
    main()
