"""A consumer in another process is woken through Redis by a publish in this one, long before its next poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from channels.layers import channel_layers

from betaassi_django.client import get_client
from betaassi_django.publishing import notify
from betaassi_django.publishing.positions import register
from project.settings import redis_channel_layers
from tests.conftest import shared_database_url
from tests.redis_server import RedisServer
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

#: The consumer polls this rarely: an event handled within the wait below came through the wake-up.
POLL_SECONDS = 120


def _members(server: RedisServer) -> int:
    """How many channels belong to the publishers' wake group (channels-redis keeps a sorted set per group)."""
    client = redis.Redis(port=server.port)
    return sum(client.zcard(key) for key in client.scan_iter(f"*group:{notify.WAKE_GROUP}"))


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_publish_here_wakes_a_consumer_in_another_process_through_redis(processor, settings, tmp_path):
    with RedisServer() as server:
        settings.CHANNEL_LAYERS = redis_channel_layers(server.url)
        channel_layers.backends.clear()
        support = Support.objects.create()
        register(get_client(), support, "woken")
        log = tmp_path / "handled.log"
        env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
               "REDIS_URL": server.url, "CONSUMER_LOG": str(log)}
        process = subprocess.Popen(
            [sys.executable, "manage.py", "consume_queue", "woken", "--assistant", support.id, "--interval",
             str(POLL_SECONDS), "--handler", "tests.test_consumer_processes.handler"],
            cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "consuming woken as " in process.stdout.readline()
            assert _until(lambda: _members(server) == 1, 30)  # its listener joined the wake group
            time.sleep(0.5)  # its first poll found nothing: it now waits for a wake-up (or POLL_SECONDS)
            event_id = support.publish("wake.me", {"n": 1})
            handled = _until(lambda: log.exists() and log.read_text() == f"done {event_id}\n", 30)
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
            channel_layers.backends.clear()
    assert handled, output
    assert process.returncode == 0, output
