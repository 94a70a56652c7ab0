"""A channels-redis layer whose receivers outlive a Redis restart.

With the stock layer, when Redis restarts (or drops its connections) the one
receive a process has waiting at Redis fails, and that consumer closes with
1011; the process's other consumers carry on, but a restarted Redis has
forgotten every group, so they stay open and deaf: no turn reaches them again.
This layer instead keeps every receive waiting through the outage (retrying
with back-off), and when Redis answers again it joins every group this process
joined, before any receive resumes. Messages Redis lost with its restart stay
lost; everything sent after the rejoin arrives.

It also renews its memberships four times per ``group_expiry`` (a day by
default): channels-redis drops a member that old, so a WebSocket open for a day
would otherwise stop receiving its session's frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

import redis.exceptions
from channels_redis.core import RedisChannelLayer as StockRedisChannelLayer

logger = logging.getLogger("betaassi_django.layers")

#: Seconds before the first retry after Redis failed, and the most between two retries.
RETRY_FIRST, RETRY_MAX = 0.1, 5.0
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisChannelLayer(StockRedisChannelLayer):
    """``channels_redis.core.RedisChannelLayer`` that waits out Redis outages and rejoins its groups."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memberships: dict[str, set[str]] = defaultdict(set)  # group -> this process's channels in it
        #: Called (in the receiving loop) after each recovery, e.g. to catch up on what the outage hid.
        self.on_reconnect: list[Callable[[], None]] = []
        self._down_since: float | None = None
        self._recovering: asyncio.Lock | None = None
        self._renewing: asyncio.Task | None = None

    async def group_add(self, group: str, channel: str) -> None:
        await _again(super().group_add, group, channel)
        self.memberships[group].add(channel)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self.memberships:
            await asyncio.sleep(self.group_expiry / 4)
            try:
                for group, channel in self._joined():
                    await super().group_add(group, channel)
            except _REDIS_DOWN:  # a receive notices the outage and rejoins everything
                logger.debug("could not renew group memberships while Redis is down")

    async def close_pools(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
        await super().close_pools()

    async def group_send(self, group: str, message: dict) -> None:
        await _again(super().group_send, group, message)

    async def send(self, channel: str, message: dict) -> None:
        await _again(super().send, channel, message)

    async def group_discard(self, group: str, channel: str) -> None:
        channels = self.memberships.get(group)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self.memberships[group]
        try:
            await super().group_discard(group, channel)
        except _REDIS_DOWN:  # Redis lost the group anyway, or forgets the member at group_expiry
            logger.debug("could not leave %s while Redis is down", group)

    async def receive(self, channel: str) -> dict:
        delay = RETRY_FIRST
        while True:
            try:
                if self._down_since is not None:
                    await self._recover()
                return await super().receive(channel)
            except _REDIS_DOWN as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("channel layer lost Redis (%s: %s); receives wait for it, then rejoin their "
                                   "groups", type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _joined(self) -> list[tuple[str, str]]:
        return [(group, channel) for group, channels in self.memberships.items() for channel in channels]

    async def _recover(self) -> None:
        """Join every group again, once for all the receives that waited (raises while Redis is still down)."""
        if self._recovering is None:
            self._recovering = asyncio.Lock()
        async with self._recovering:
            if self._down_since is None:
                return  # another receive recovered while this one waited for the lock
            # Every pooled connection is one Redis closed: start afresh rather than meet them one by one.
            loop_layer = self._layers.get(asyncio.get_running_loop())
            if loop_layer is not None:
                await loop_layer.flush()
            joined = self._joined()
            for group, channel in joined:
                await super().group_add(group, channel)
            logger.warning("channel layer reconnected to Redis after %.1fs; rejoined %d group membership(s)",
                           time.monotonic() - self._down_since, len(joined))
            self._down_since = None
            for callback in self.on_reconnect:
                callback()


async def _again(command, *args):
    """Once more after a connection error: after a restart a pooled connection fails once, and the pool reconnects.

    A stale connection fails before its command reaches Redis, so nothing is sent twice then (only a connection
    lost in the middle of a command could repeat it); a Redis still down fails the second attempt too, and the
    caller sees that error.
    """
    try:
        return await command(*args)
    except _REDIS_DOWN:
        return await command(*args)
