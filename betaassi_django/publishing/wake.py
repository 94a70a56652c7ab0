"""How a waiting processor is woken: an event in this process, or a message on the channel layer."""

from __future__ import annotations

import asyncio
import threading

from . import signals


class Waker:
    """Waits up to an interval, returning early when a publisher wakes processors.

    With a channel layer that crosses processes (channels-redis), a listener
    thread joins the wake group; otherwise only publishers in this process can
    wake it, and the interval is the fallback.
    """

    def __init__(self) -> None:
        self._layer = signals._shared_layer()
        if self._layer is not None:
            threading.Thread(target=self._listen, name="betaassi-wake", daemon=True).start()

    def _listen(self) -> None:
        async def listen() -> None:
            channel = await self._layer.new_channel()
            await self._layer.group_add(signals.WAKE_GROUP, channel)
            while True:
                await self._layer.receive(channel)
                signals.local_wake.set()

        asyncio.run(listen())

    def wait(self, interval: float) -> None:
        """Until woken, or ``interval`` seconds at most."""
        signals.local_wake.wait(interval)
