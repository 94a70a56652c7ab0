"""How a waiting processor is woken: an event in this process, or a message on the channel layer."""

from __future__ import annotations

import asyncio
import threading

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from . import signals


class Waker:
    """Waits up to an interval, returning early when a publisher wakes processors.

    With a channel layer that crosses processes (channels-redis), a listener
    thread joins the wake group; otherwise only publishers in this process can
    wake it, and the interval is the fallback.
    """

    def __init__(self) -> None:
        self._layer = None
        if signals._shared_layer() is not None:
            # Its own layer instance: a channels-redis layer receives on one event loop only, and the
            # server's consumers receive on the shared one.
            self._layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
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
