"""SQL statements and new database connections of a whole process, counted the same way here and in the peer,
and the long-lived worker threads that run sync turns (each keeps its thread, so its database connection).

Imported by ``bench/turns.py`` (as ``bench.peer.counting``) and by ``driver.py`` in the peer's virtualenv
(as ``counting``): it needs nothing but Django, so both sides count by one rule.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from django.db import connections
from django.db.backends.signals import connection_created


class Counters:
    """Every statement on every connection of the process (an ``execute_wrapper`` on each); every connection
    Django opens (``connection_created``), and the connections to the server opened: the same on SQLite; on
    PostgreSQL with a pool, the pool's own count (Django sends ``connection_created`` for a checkout too)."""

    def __init__(self) -> None:
        self.sql = 0
        self.created = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        """On the connections this thread has open now, and on each connection opened from now on."""
        connection_created.connect(self._created, weak=False)
        for connection in connections.all(initialized_only=True):
            self._wrap(connection)

    def snapshot(self) -> dict[str, int]:
        """``sql``, ``opened`` (connections to the server) and ``created`` (``connection_created``) so far."""
        pool = getattr(connections["default"], "pool", None)
        with self._lock:
            sql, created = self.sql, self.created
        opened = pool.get_stats().get("connections_num", 0) if pool is not None else created
        return {"sql": sql, "opened": opened, "created": created}

    def delta(self, before: dict[str, int]) -> dict[str, int]:
        return {key: value - before[key] for key, value in self.snapshot().items()}

    def _created(self, sender, connection, **kwargs) -> None:
        with self._lock:
            self.created += 1
        self._wrap(connection)

    def _wrap(self, connection) -> None:
        if self._count not in connection.execute_wrappers:
            connection.execute_wrappers.append(self._count)

    def _count(self, execute, sql, params, many, context):
        with self._lock:
            self.sql += 1
        return execute(sql, params, many, context)


class Workers:
    """``size`` threads that live as long as the benchmark: worker ``i`` always takes job ``i`` of a batch, so a
    conversation stays on one thread and a connection the code keeps is not counted as new each batch."""

    def __init__(self, size: int) -> None:
        self._jobs: list[queue.Queue] = [queue.Queue() for _ in range(size)]
        self._threads = [threading.Thread(target=self._serve, args=(jobs,), daemon=True) for jobs in self._jobs]
        for thread in self._threads:
            thread.start()

    def batch(self, turn: Callable[[int], object], indices: list[int]) -> list[float]:
        """``turn(i)`` on worker ``i`` for each of ``indices``, all at once; the wall seconds of each (an
        exception is raised here)."""
        done: queue.Queue = queue.Queue()
        for index in indices:
            self._jobs[index].put((turn, index, done))
        results = [done.get() for _ in indices]
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def close(self) -> None:
        for jobs in self._jobs:
            jobs.put(None)
        for thread in self._threads:
            thread.join(10)

    @staticmethod
    def _serve(jobs: queue.Queue) -> None:
        while (job := jobs.get()) is not None:
            turn, index, done = job
            start = time.perf_counter()
            try:
                turn(index)
            except BaseException as error:  # handed to the caller
                done.put(error)
                continue
            done.put(time.perf_counter() - start)
