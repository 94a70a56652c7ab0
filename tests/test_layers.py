"""betaassi_django.layers: receivers that outlive a Redis restart and memberships that outlive group_expiry."""

from __future__ import annotations

import asyncio

import pytest

from betaassi_django.layers import RedisChannelLayer
from project.settings import redis_channel_layers
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server


def _layer(url: str, **options) -> RedisChannelLayer:
    return RedisChannelLayer(**{**redis_channel_layers(url)["default"]["CONFIG"], **options})


async def test_every_receiver_of_a_process_hears_its_groups_again_after_a_redis_restart(redis_server):
    layer = _layer(redis_server.url)
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("betaassi.session.x", channel)
    receives = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0.5)  # all three waiting, one of them at Redis for the process

    await asyncio.to_thread(redis_server.stop)
    await asyncio.sleep(1)
    await asyncio.to_thread(redis_server.start)
    for _ in range(100):  # until the layer has joined its groups again
        if layer._down_since is None and await layer.connection(0).exists(layer._group_key("betaassi.session.x")):
            break
        await asyncio.sleep(0.1)
    await layer.group_send("betaassi.session.x", {"type": "session.frame", "n": 1})
    got = await asyncio.wait_for(asyncio.gather(*receives), 10)
    assert got == [{"type": "session.frame", "n": 1}] * 3
    await layer.close_pools()


async def test_a_membership_older_than_group_expiry_still_receives(redis_server):
    layer = _layer(redis_server.url, group_expiry=2)
    channel = await layer.new_channel()
    await layer.group_add("betaassi.session.y", channel)
    await asyncio.sleep(3)  # channels-redis drops members older than group_expiry when a group is sent to
    await layer.group_send("betaassi.session.y", {"type": "session.frame", "n": 2})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "session.frame", "n": 2}
    await layer.close_pools()
