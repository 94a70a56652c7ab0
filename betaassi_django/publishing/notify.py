"""The publish queue's notices through the channel layer: wake-ups and broadcasts (within one process, directly).

Publishers call ``wake(assistant_id)`` so a processor applies the event within
milliseconds instead of at its next poll. A wake-up names its assistant (``take_woken``), so the woken
processor drains that queue only; it also leaves a hint in the database (``PublishHint``), the one question
a processor's poll asks per cycle (``hints``), for processes no wake-up reaches. The channel layer carries wake-ups
across processes when it is channels-redis; within a process they reach every
waiter: ``local_wake`` (the processor's event) and each subscribed callback
(consumers), so a processor and any number of consumers in one process are all
woken. Applied events are broadcast to the channel-layer group
``betaassi.assistant.<id>``, where WebSocket consumers and other processes listen.

The in-memory layer neither crosses processes nor is safe across threads: its
queues belong to the server's event loop. A processor running inside the
server (``serve_on(loop)``) hands its broadcasts to that loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import types
import weakref
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from betaassi_django.groups import assistant_group

logger = logging.getLogger("betaassi_django.publishing")

WAKE_GROUP = "betaassi.publish"
local_wake = threading.Event()
_server_loop: asyncio.AbstractEventLoop | None = None
_send_failing = False  # the last send through a cross-process layer failed
_waiters: dict[tuple, Callable[[], Callable[[], None] | None]] = {}  # id(callback) -> a (weak) reference to it
_waiters_lock = threading.Lock()
_woken: set[str] = set()  # assistants named by wake-ups since the processor last took them
_hint_failing = False  # the last hint could not be written


def subscribe(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from any thread) on every wake-up in this process. A bound method is held weakly, so a
    forgotten consumer does not linger."""
    ref = weakref.WeakMethod(callback) if isinstance(callback, types.MethodType) else (lambda: callback)
    with _waiters_lock:
        _waiters[_key(callback)] = ref


def unsubscribe(callback: Callable[[], None]) -> None:
    with _waiters_lock:
        _waiters.pop(_key(callback), None)


def _key(callback) -> tuple:
    """The same for two accesses of one bound method (``event.set`` is a new object each time)."""
    owner = getattr(callback, "__self__", None)
    if owner is None:
        return (id(callback),)
    return (id(owner), getattr(callback, "__name__", ""))


def wake_local(assistant_id: str | None = None) -> None:
    """Wake every waiter of this process: the processor's ``local_wake`` and each subscriber (naming the
    assistant whose queue has a new event, when known)."""
    if assistant_id:
        with _waiters_lock:
            _woken.add(assistant_id)
    local_wake.set()
    with _waiters_lock:
        refs = list(_waiters.items())
    for key, ref in refs:
        callback = ref()
        if callback is None:
            with _waiters_lock:
                _waiters.pop(key, None)
            continue
        try:
            callback()
        except Exception:  # one broken waiter must not keep the others asleep
            logger.exception("a wake-up subscriber failed")


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


def take_woken() -> set[str]:
    """The assistants named by wake-ups since the last call (the processor drains these)."""
    with _waiters_lock:
        woken = set(_woken)
        _woken.clear()
    return woken


def announced(assistant_id: str) -> bool:
    """Whether a wake-up named ``assistant_id`` since the processor last took them (``take_woken``); taken with
    this answer: a drain lists that queue once more before it ends, and that list is the wake-up's answer."""
    with _waiters_lock:
        found = assistant_id in _woken
        _woken.discard(assistant_id)
    return found


def hint(assistant_id: str) -> None:
    """Leave a row saying ``assistant_id`` has a new event, for processors no wake-up reaches. Best effort: a
    hint that cannot be written is made up for by the processors' full sweep (logged once per outage)."""
    global _hint_failing
    from .models import PublishHint

    try:
        PublishHint.objects.create(assistant_id=assistant_id)
    except Exception as exc:  # a locked or unreachable database, or no database access in this context
        if not _hint_failing:
            logger.warning("could not leave a publish hint for %s (%s: %s); the processors' sweep will find the "
                           "event", assistant_id, type(exc).__name__, exc)
        _hint_failing = True
    else:
        _hint_failing = False


def hints(assistant_ids: list[str] | None = None) -> dict[str, int]:
    """The assistants with hints, each with its newest hint's id: one query."""
    from django.db.models import Max

    from .models import PublishHint

    rows = PublishHint.objects.all()
    if assistant_ids is not None:
        rows = rows.filter(assistant_id__in=assistant_ids)
    return dict(rows.values("assistant_id").annotate(last=Max("id")).values_list("assistant_id", "last"))


def clear_hints(assistant_id: str, up_to: int) -> None:
    """Drop the hints a processor has acted on (those written later stay: their events may be newer)."""
    from .models import PublishHint

    PublishHint.objects.filter(assistant_id=assistant_id, id__lte=up_to).delete()


def wake(assistant_id: str) -> None:
    """Tell processors and consumers that ``assistant_id`` has a new event."""
    hint(assistant_id)
    wake_local(assistant_id)
    if shared_layer() is not None:
        send(WAKE_GROUP, {"type": "publish.wake", "assistant": assistant_id})


def broadcast(assistant_id: str, outcomes: list[dict]) -> None:
    """Announce applied events to the assistant's group (WebSocket consumers, other processes)."""
    send(assistant_group(assistant_id), {"type": "publish.applied", "assistant": assistant_id, "events": outcomes})
