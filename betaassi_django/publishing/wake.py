"""How a waiting processor is woken: an event in this process, or a message on the channel layer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from . import notify

logger = logging.getLogger("betaassi_django.publishing")

#: Seconds before the first reconnection attempt after an error, and the most between two attempts.
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0
#: Seconds between renewals of the wake group's membership: channels-redis forgets a member after a day
#: (group_expiry), and a restarted Redis forgets every member at once.
REJOIN_SECONDS = 60.0
#: The longest assistant id a wake-up may name (the publish tables hold 64 characters).
MAX_ID_CHARS = 64


class Waker:
    """Waits up to an interval, returning early when a publisher wakes processors.

    With a channel layer that crosses processes (channels-redis), a listener
    thread joins the wake group; otherwise only publishers in this process can
    wake it, and the interval is the fallback. The listener outlives any error
    of the layer (Redis restarted, unreachable, a timeout): it reconnects with
    back-off, logs once per outage, and meanwhile the interval's polls go on.
    """

    def __init__(self) -> None:
        self.listening = threading.Event()  # set while the listener is a member of the wake group
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        if notify.shared_layer() is not None:
            self._thread = threading.Thread(target=self._listen, name="betaassi-wake", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        try:
            self._loop.run_until_complete(listen_forever(self.listening, self._stop))
        except asyncio.CancelledError:
            pass  # close()
        finally:
            self._loop.close()

    def wait(self, interval: float) -> None:
        """Until woken, or ``interval`` seconds at most."""
        notify.local_wake.wait(interval)

    def close(self) -> None:
        """Stop listening (the thread is a daemon, so a process may also just exit)."""
        if self._thread is None:
            return
        self._stop.set()
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            # Again until it ends: a cancellation that lands as a read completes can be lost (asyncio timeouts).
            try:
                self._loop.call_soon_threadsafe(_cancel_all, self._loop)
            except RuntimeError:  # its loop closed meanwhile
                break
            self._thread.join(0.1)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


async def listen_forever(listening: threading.Event, stop: threading.Event) -> None:
    """Join the wake group and wake this process's waiters per message (``notify.wake_local``); after any error,
    start again with back-off.

    After each recovery it sets ``local_wake`` once too: wake-ups published while it was away were lost.
    """
    delay, down_since = BACKOFF_FIRST, None
    while not stop.is_set():
        # Its own layer instance, new per attempt: a channels-redis layer receives on one event loop only (the
        # server's consumers receive on the shared one), and a failed one may hold a half-read connection.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        if hasattr(layer, "on_reconnect"):  # betaassi_django.layers: it waits out Redis outages itself
            layer.on_reconnect.append(notify.wake_local)
        try:
            channel = await layer.new_channel()
            await layer.group_add(notify.WAKE_GROUP, channel)
            listening.set()
            if down_since is not None:
                logger.warning("wake-up listener reconnected after %.1fs", time.monotonic() - down_since)
                down_since, delay = None, BACKOFF_FIRST
            notify.wake_local()  # events published while it was away are applied now, not at the next poll
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_receive(layer, channel))
                tasks.create_task(_rejoin(layer, channel))
        except Exception as exc:  # whatever the layer raised, the listener must come back
            listening.clear()
            if stop.is_set():
                return
            if down_since is None:
                down_since = time.monotonic()
                logger.warning("wake-up listener lost the channel layer (%s); reconnecting with back-off, "
                               "polling meanwhile", _reason(exc))
        finally:
            await _close(layer)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _receive(layer, channel: str) -> None:
    while True:
        message = await layer.receive(channel)
        assistant = message.get("assistant") if isinstance(message, dict) else None
        named = isinstance(assistant, str) and 0 < len(assistant) <= MAX_ID_CHARS  # ids are at most 64 characters
        notify.wake_local(assistant if named else None)  # the wake-up names its queue (a forged name: a plain wake)


async def _rejoin(layer, channel: str) -> None:
    while True:
        await asyncio.sleep(REJOIN_SECONDS)
        await layer.group_add(notify.WAKE_GROUP, channel)


async def _close(layer) -> None:
    close = getattr(layer, "close_pools", None)
    if close is not None:
        try:
            await asyncio.wait_for(close(), 5)
        except Exception:  # its connections are already broken
            logger.debug("closing the wake-up listener's layer failed", exc_info=True)


def _reason(exc: BaseException) -> str:
    """The first error of a task group (which wraps them), as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
