"""The processor's wake-up listener over Redis survives idle reads and Redis going away and coming back."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import override_settings

from betaassi_django.publishing import notify
from betaassi_django.publishing.models import PublishHint
from betaassi_django.publishing.wake import Waker
from project.settings import redis_channel_layers
from tests.redis_server import RedisServer


class _Records(logging.Handler):
    """The records of the wake-up listener, the publishers and the channel layer: what these tests are about.

    The run engine's heartbeat thread outlives the test that started it (the engine is one per process) and may
    log about runs of that earlier test while these tests wait; its records are not theirs to count.
    """

    LOGGERS = ("betaassi_django.publishing", "betaassi_django.layers")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in self.LOGGERS:
            self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def logged():
    """Every record of the app's loggers, from any thread (they do not propagate to caplog's root handler)."""
    logger, handler = logging.getLogger("betaassi_django"), _Records()
    level, logger.level = logger.level, logging.DEBUG
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.level = level


def _stock_layer(url: str) -> dict:
    """channels-redis's own layer (as a project may configure it), with the project's connection timeouts."""
    layers = redis_channel_layers(url)
    layers["default"]["BACKEND"] = "channels_redis.core.RedisChannelLayer"
    return layers


def _woken_through_redis(timeout: float = 5) -> bool:
    """A wake-up sent through the layer (not the in-process event) reaches the listener."""
    notify.local_wake.clear()
    notify.send(notify.WAKE_GROUP, {"type": "publish.wake", "assistant": "asst_x"})
    return notify.local_wake.wait(timeout)


def test_a_wake_up_through_redis_names_its_assistant(redis_server):
    """The listener hands the processor the assistant the message names: it drains that queue only."""
    with override_settings(CHANNEL_LAYERS=redis_channel_layers(redis_server.url)):
        waker = Waker()
        try:
            assert waker.listening.wait(10)
            notify.take_woken()
            assert _woken_through_redis()
            assert notify.take_woken() == {"asst_x"}
            assert notify.take_woken() == set()  # taken once
            # A forged wake-up (anyone who can write to Redis) names no queue the processor would go and read:
            # an id longer than any id, a number, none, an empty one. Each is still a plain wake-up.
            for forged in ("asst_" + "x" * 5000, 7, None, ""):
                notify.local_wake.clear()
                notify.send(notify.WAKE_GROUP, {"type": "publish.wake", "assistant": forged})
                assert notify.local_wake.wait(5)
                assert notify.take_woken() == set()
        finally:
            waker.close()


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _restart_with_an_outage(redis_server: RedisServer, seconds: float) -> None:
    redis_server.stop()
    time.sleep(seconds)  # long enough for several retries: still one warning
    redis_server.start()


def test_the_listener_outlives_idle_reads_and_a_redis_restart(redis_server, logged):
    with override_settings(CHANNEL_LAYERS=redis_channel_layers(redis_server.url)):
        waker = Waker()
        try:
            assert waker.listening.wait(10)
            time.sleep(6)  # past redis-py 8's default 5 s read timeout, which used to kill the listener
            assert _woken_through_redis()
            assert logged.warnings() == []

            _restart_with_an_outage(redis_server, 2)
            notify.local_wake.clear()
            assert notify.local_wake.wait(15)  # its catch-up wake-up, for what was published meanwhile
            assert _woken_through_redis()  # it joined the wake group again
        finally:
            waker.close()
    warnings = logged.warnings()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("channel layer lost Redis (ConnectionError: ")
    assert warnings[0].endswith("); receives wait for it, then rejoin their groups")
    assert warnings[1].startswith("channel layer reconnected to Redis after ")
    assert warnings[1].endswith("s; rejoined 1 group membership(s)")


def test_under_the_stock_layer_the_listener_reconnects_itself(redis_server, logged):
    with override_settings(CHANNEL_LAYERS=_stock_layer(redis_server.url)):
        waker = Waker()
        try:
            assert waker.listening.wait(10)
            _restart_with_an_outage(redis_server, 2)
            assert _wait(lambda: not waker.listening.is_set(), 10)
            notify.local_wake.clear()
            assert notify.local_wake.wait(15)  # its catch-up wake-up, once it is back
            assert waker.listening.is_set()
            assert _woken_through_redis()
        finally:
            waker.close()
    warnings = logged.warnings()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("wake-up listener lost the channel layer (ConnectionError: ")
    assert warnings[0].endswith("); reconnecting with back-off, polling meanwhile")
    assert warnings[1].startswith("wake-up listener reconnected after ")
    assert sum("wake-up listener" in r.getMessage() for r in logged.records) == 2  # no line per retry, any level


@pytest.mark.django_db
def test_publishers_say_once_that_wake_ups_cannot_be_sent_while_redis_is_down(redis_server, logged):
    with override_settings(CHANNEL_LAYERS=redis_channel_layers(redis_server.url)):
        notify.wake("asst_x")
        redis_server.stop()
        for _ in range(3):
            notify.wake("asst_x")  # the event is published all the same; processors poll
        redis_server.start()
        notify.wake("asst_x")
        notify.wake("asst_x")
    assert PublishHint.objects.filter(assistant_id="asst_x").count() == 6  # each wake-up left its hint
    warnings = logged.warnings()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("could not send publish.wake to betaassi.publish (ConnectionError: ")
    assert warnings[0].endswith("); later failures are not logged until a send succeeds")
    assert warnings[1] == "sending through the channel layer works again"
