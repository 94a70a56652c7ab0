"""The channel-layer group names: one home for the names that senders and listeners must agree on; and how a
session's turn frames reach its connections (``fan_out``: this process's directly, others' through the layer).

A low floor (it imports nothing of the app), so the publish queue's broadcasts, the session turns, the
account re-checks and the WebSocket consumer all name the same groups without importing each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

from channels.layers import InMemoryChannelLayer

logger = logging.getLogger("betaassi_django.sessions")


def assistant_group(assistant_id: str) -> str:
    """Where the publish queue announces an assistant's applied events (``publish.applied``)."""
    return f"betaassi.assistant.{assistant_id}"


def session_group(assistant_id: str, session_id: str) -> str:
    """Where a session's turn frames go. Group names allow only ``[A-Za-z0-9._-]``; session ids may hold ``:``,
    so they are hashed."""
    return f"betaassi.session.{assistant_id}.{hashlib.sha256(session_id.encode()).hexdigest()[:32]}"


def user_group(user_pk) -> str:
    """Where a user's open connections hear that their account changed (``account.changed``)."""
    return f"betaassi.user.{user_pk}"


# -- a session's turn frames ----------------------------------------------------------------------------------


_origin: tuple[int, str] = (0, "")


def origin() -> str:
    """Names this process in the frames it sends through a layer that crosses processes (Redis): its own
    connections got them directly (``listen``) and skip the copy. Per process id, so workers forked from one
    parent (a preloading server) are told apart."""
    global _origin
    if _origin[0] != os.getpid():
        _origin = (os.getpid(), uuid.uuid4().hex)
    return _origin[1]


#: This process's connections to each session group: ``(loop, deliver)`` by the connection's key.
_listeners: dict[str, dict[object, tuple[asyncio.AbstractEventLoop, Callable[[str], Awaitable[None]]]]] = {}


def listen(group: str, key, deliver: Callable[[str], Awaitable[None]]) -> None:
    """``deliver(text)`` receives every frame, JSON-encoded, of the turns this process runs in the session of
    ``group`` (a connection's own; the channel layer brings it the turns of other processes)."""
    _listeners.setdefault(group, {})[key] = (asyncio.get_running_loop(), deliver)


def unlisten(group: str, key) -> None:
    listeners = _listeners.get(group)
    if listeners is not None:
        listeners.pop(key, None)
        if not listeners:
            del _listeners[group]


async def fan_out(group: str, layer, frame: dict) -> None:
    """A turn's frame to every connection to the session: this process's directly, encoded once (through the
    in-memory layer each frame was a task, a deep copy and a sweep of every channel and group per
    connection); other processes' through a layer that reaches them, marked so ours skip that copy."""
    text, loop = json.dumps(frame), asyncio.get_running_loop()
    for listener_loop, deliver in list(_listeners.get(group, {}).values()):
        if listener_loop is loop:
            try:
                await deliver(text)
            except Exception:  # one connection's fault must not cost the others their frames
                logger.exception("sending a frame of %s failed", group)
    if layer is not None and not isinstance(layer, InMemoryChannelLayer):
        await layer.group_send(group, {"type": "session.frame", "frame": frame, "origin": origin()})
