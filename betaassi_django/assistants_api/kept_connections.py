"""Database work on threads that keep their connection between calls, and closing those connections at the end.

Django's ``sync_to_async`` helpers close a thread's connection after every call when ``CONN_MAX_AGE`` is 0, so
each call opened a new one. The run engine's database threads, the API views' and the WebSocket path's
(``ws_database``) call through ``on_kept_connection`` instead, and close their threads' connections with
``close_thread_connections`` before a test database is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger("betaassi_django.engine")


def on_kept_connection(function: Callable, *args, give_back: bool = False):
    """Run ``function`` on this thread's kept connection, first dropping it if an error left it unusable.

    ``give_back``: afterwards hand the connection back to the pool (or close it) as ``CONN_MAX_AGE`` says,
    rather than keep it (threads that must not hold a pooled connection between calls).
    """
    from django.db import connection

    if connection.connection is not None and connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()
    try:
        return function(*args)
    finally:
        if connection.in_atomic_block:  # never: every function commits or rolls back its own
            logger.error("database work left a transaction open; closing its connection")
            connection.close()
        elif give_back:
            connection.close_if_unusable_or_obsolete()


def close_thread_connections(executor: ThreadPoolExecutor, workers: int) -> None:
    """Close the database connection each of ``executor``'s ``workers`` threads holds: one task per thread, each
    holding its thread (a barrier) until every thread has one."""
    from django.db import connections

    barrier = threading.Barrier(workers)

    def close() -> None:
        connections.close_all()
        barrier.wait(30)

    for done in [executor.submit(close) for _ in range(workers)]:
        done.result(60)
