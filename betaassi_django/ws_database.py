"""The WebSocket path's own database work, off the event loop: ``on_database``'s threads, and session touches.

The consumer's admission and re-checks (``access``) and a turn's end (``turns``) reach the database from async
code. Channels' ``database_sync_to_async`` would open a connection per call; ``on_database`` runs the work on
threads that keep theirs. A turn's end writes the session's ``touched_at`` only when a reader would see it change
(``touch_due``), and a WebSocket turn does not wait for it (``touch_soon``: touches arriving together are written
in one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from betaassi_django.assistants_api.kept_connections import on_kept_connection

logger = logging.getLogger("betaassi_django.sessions")


@functools.cache
def _executor() -> ThreadPoolExecutor:
    """The threads of the WebSocket path's database work (admission, re-checks, touches). Channels'
    ``database_sync_to_async`` closes the connection around every call (``CONN_MAX_AGE = 0``), so each turn
    opened one or two new connections, all on the one thread every consumer of the process shares; these
    threads keep theirs on SQLite (one thread: one writer) and give them back to the pool elsewhere (a
    connection kept there would also hold the test database open at its drop)."""
    return ThreadPoolExecutor(max_workers=1 if connection.vendor == "sqlite" else 2,
                              thread_name_prefix="betaassi-ws-db")


async def on_database(function: Callable, *args):
    """``function(*args)`` on a thread of the WebSocket path's database work (``_executor``), on its kept
    connection (SQLite) or one handed back to the pool after the call (elsewhere)."""
    call = functools.partial(on_kept_connection, function, *args, give_back=connection.vendor != "sqlite")
    return await sync_to_async(call, thread_sensitive=False, executor=_executor())()


# -- session touches ------------------------------------------------------------------------------------------


_now = timezone.now


def touch_due(session) -> bool:
    """Whether a turn's end writes the session's ``touched_at``: not when this session object last wrote it in
    the current minute. It is shown to the minute ("last used", the session list's order), so that write would
    change nothing a reader sees; skipping it saves a turn one statement and, from async code, a thread hop."""
    touched = session.touched_at
    return touched is None or _now().replace(second=0, microsecond=0) != touched.replace(second=0, microsecond=0)


@dataclass
class _Touches:
    pending: list = field(default_factory=list)
    writing: asyncio.Task | None = None


_touches: dict[asyncio.AbstractEventLoop, _Touches] = {}


def touch_soon(session) -> None:
    """``session.touch()`` at once (when due: ``touch_due``), on ``on_database``'s threads, without the turn
    waiting for it: the touches that arrive while one is written go together in one transaction."""
    if not touch_due(session):
        return
    loop = asyncio.get_running_loop()
    touches = _touches.setdefault(loop, _Touches())
    touches.pending.append(session)
    if touches.writing is None:
        touches.writing = loop.create_task(_write_touches(loop, touches))


async def _write_touches(loop: asyncio.AbstractEventLoop, touches: _Touches) -> None:
    try:
        while touches.pending:
            batch, touches.pending = touches.pending, []
            try:
                await on_database(_touch_all, batch)
            except Exception:  # the sessions' turns ran; only their touched_at is late
                logger.exception("recording %d session touches failed", len(batch))
    finally:
        touches.writing = None
        if _touches.get(loop) is touches and not touches.pending:
            del _touches[loop]


def _touch_all(sessions: list) -> None:
    with transaction.atomic() if len(sessions) > 1 else contextlib.nullcontext():  # one UPDATE needs no BEGIN
        for session in sessions:
            session.touch()
