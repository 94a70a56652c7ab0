"""Wake-ups and broadcasts through the channel layer (and, within one process, directly).

Publishers call ``wake(assistant_id)`` so a processor applies the event within
milliseconds instead of at its next poll. The channel layer carries wake-ups
across processes when it is channels-redis; the in-memory layer does not cross
processes (nor is it safe across threads), so within a process a plain
``threading.Event`` carries them. Applied events are broadcast to the
channel-layer group ``betaassi.assistant.<id>`` for other processes.
"""

from __future__ import annotations

import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger("betaassi_django.publishing")

WAKE_GROUP = "betaassi.publish"
local_wake = threading.Event()


def assistant_group(assistant_id: str) -> str:
    return f"betaassi.assistant.{assistant_id}"


def _shared_layer():
    """The channel layer when it crosses processes (channels-redis), else None."""
    layer = get_channel_layer()
    return None if layer is None or isinstance(layer, InMemoryChannelLayer) else layer


def _send(group: str, message: dict) -> None:
    layer = _shared_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except RuntimeError:  # called from inside an event loop: the caller's loop sends it
        logger.debug("not sending %s to %s from inside an event loop", message.get("type"), group)
    except Exception:
        logger.exception("could not send %s to %s", message.get("type"), group)


def wake(assistant_id: str) -> None:
    """Tell processors that ``assistant_id`` has a new event."""
    local_wake.set()
    _send(WAKE_GROUP, {"type": "publish.wake", "assistant": assistant_id})


def broadcast(assistant_id: str, outcomes: list[dict]) -> None:
    """Announce applied events to the assistant's group (WebSocket consumers, other processes)."""
    _send(assistant_group(assistant_id), {"type": "publish.applied", "assistant": assistant_id, "events": outcomes})
