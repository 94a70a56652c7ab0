"""The processor's wake-up listener over channels-redis survives Redis going away and coming back."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import override_settings

from betaassi_django.publishing import signals
from betaassi_django.publishing.wake import Waker
from project.settings import redis_channel_layers
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warnings():
    """Every record of the publishing logger, from any thread."""
    logger, handler = logging.getLogger("betaassi_django.publishing"), _Records()
    level, logger.level = logger.level, logging.DEBUG
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.level = level


def _woken_through_redis() -> bool:
    """A wake-up sent through the layer (not the in-process event) reaches the listener."""
    signals.local_wake.clear()
    signals._send(signals.WAKE_GROUP, {"type": "publish.wake", "assistant": "asst_x"})
    return signals.local_wake.wait(5)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_listener_stays_through_idle_reads_and_a_redis_restart(redis_server, warnings):
    with override_settings(CHANNEL_LAYERS=redis_channel_layers(redis_server.url)):
        waker = Waker()
        try:
            assert waker.listening.wait(10)
            time.sleep(6)  # past redis-py 8's default 5 s read timeout, which used to kill the listener
            assert _woken_through_redis()
            assert [r.getMessage() for r in warnings.records if r.levelno >= logging.WARNING] == []

            # An outage long enough for several reconnection attempts: one warning for all of them.
            redis_server.stop()
            assert _wait(lambda: not waker.listening.is_set(), 10)
            time.sleep(2)
            redis_server.start()
            assert waker.listening.wait(15)
            assert _woken_through_redis()
        finally:
            waker.close()
    logged = [r.getMessage() for r in warnings.records if r.levelno >= logging.WARNING]
    assert len(logged) == 2, logged
    assert logged[0].startswith("wake-up listener lost the channel layer (ConnectionError: ")
    assert logged[0].endswith("); reconnecting with back-off, polling meanwhile")
    assert logged[1].startswith("wake-up listener reconnected after ")
    attempts = [r for r in warnings.records if "wake-up listener" in r.getMessage()]
    assert len(attempts) == 2  # no line per retry, at any level


def test_a_listener_that_reconnects_wakes_the_processor_for_what_it_missed(redis_server):
    with override_settings(CHANNEL_LAYERS=redis_channel_layers(redis_server.url)):
        waker = Waker()
        try:
            assert waker.listening.wait(10)
            redis_server.stop()
            assert _wait(lambda: not waker.listening.is_set(), 10)
            signals.local_wake.clear()  # a publisher's wake-up is lost while Redis is down
            redis_server.start()
            assert signals.local_wake.wait(15)  # the listener's catch-up wake, once it is back
            assert waker.listening.is_set()
        finally:
            waker.close()
