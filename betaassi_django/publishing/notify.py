"""The publish queue's notices through the channel layer: wake-ups and broadcasts (within one process, directly).

Publishers call ``wake(assistant_id)`` so a processor applies the event within
milliseconds instead of at its next poll. The channel layer carries wake-ups
across processes when it is channels-redis; within a process a plain
``threading.Event`` carries them. Applied events are broadcast to the
channel-layer group ``betaassi.assistant.<id>``, where WebSocket consumers and
other processes listen.

The in-memory layer neither crosses processes nor is safe across threads: its
queues belong to the server's event loop. A processor running inside the
server (``serve_on(loop)``) hands its broadcasts to that loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from betaassi_django.groups import assistant_group

logger = logging.getLogger("betaassi_django.publishing")

WAKE_GROUP = "betaassi.publish"
local_wake = threading.Event()
_server_loop: asyncio.AbstractEventLoop | None = None
_send_failing = False  # the last send through a cross-process layer failed


def serve_on(loop: asyncio.AbstractEventLoop | None) -> None:
    """Deliver this process's broadcasts on ``loop`` (the server's), for the in-memory layer."""
    global _server_loop
    _server_loop = loop


def shared_layer():
    """The channel layer when it crosses processes (channels-redis), else None."""
    layer = get_channel_layer()
    return None if layer is None or isinstance(layer, InMemoryChannelLayer) else layer


def _logged(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("broadcast failed: %s", future.exception())


def send(group: str, message: dict) -> None:
    """Send ``message`` to ``group`` from sync code: the app's one sender, which logs an outage once."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        loop = _server_loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).add_done_callback(_logged)
        return
    global _send_failing
    try:
        async_to_sync(layer.group_send)(group, message)
    except RuntimeError:  # called from inside an event loop: the caller's loop sends it
        logger.debug("not sending %s to %s from inside an event loop", message.get("type"), group)
    except Exception as exc:  # the channel layer is down: processors still poll, so say it once per outage
        if not _send_failing:
            logger.warning("could not send %s to %s (%s: %s); later failures are not logged until a send "
                           "succeeds", message.get("type"), group, type(exc).__name__, exc)
        _send_failing = True
    else:
        if _send_failing:
            logger.warning("sending through the channel layer works again")
        _send_failing = False


def wake(assistant_id: str) -> None:
    """Tell processors that ``assistant_id`` has a new event."""
    local_wake.set()
    if shared_layer() is not None:
        send(WAKE_GROUP, {"type": "publish.wake", "assistant": assistant_id})


def broadcast(assistant_id: str, outcomes: list[dict]) -> None:
    """Announce applied events to the assistant's group (WebSocket consumers, other processes)."""
    send(assistant_group(assistant_id), {"type": "publish.applied", "assistant": assistant_id, "events": outcomes})
