"""The processor as a real process: the command's loop, SIGTERM, and SIGKILL at random moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from betaassi_django.models import PublishedEvent, Session
from betaassi_django.publishing.apply import apply_events
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY, load_registry
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.publisher import publish
from betaassi_django.registry.pages import Page
from betaassi_django.registry.root import Root
from tests.conftest import shared_database_url
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _processor(*args: str) -> subprocess.Popen:
    # DEBUG: the lease lines (acquired/released, with times) that the concurrency test reads.
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "LOG_LEVEL": "DEBUG"}
    return subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", *args], cwd=settings.BASE_DIR,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(event_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = PublishedEvent.objects.filter(event_id=event_id).values_list("status", flat=True).first()
        if status:
            return status
        time.sleep(0.02)
    raise AssertionError(f"{event_id} not processed in {timeout}s")


def test_the_command_polls_and_stops_cleanly_on_sigterm():
    user = get_user_model().objects.create_user("bob")
    support = Support.objects.create()
    process = _processor("--interval", "0.1", "--assistant", support.id)
    try:
        event_id = support.sessions.create("live", owner=user)
        assert _wait_for(event_id) == "applied"
        assert support.sessions.get("live").owner == user
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert output.strip().endswith("stopped")


def _mixed_events(rng: random.Random, count: int, owner: int) -> list[Event]:
    """Creates (by an existing user, without threads: the processor checks both), updates, deletes, junk."""
    events = []
    for index in range(count):
        session_id = f"s{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.35:
            events.append(Event("session.create", session_id, {"owner": owner}))
        elif roll < 0.75:
            events.append(Event("session.update", session_id, {"model": f"m{index}"}))
        elif roll < 0.95:
            events.append(Event("session.delete", session_id, {}))
        else:
            events.append(Event("session.fly", session_id, {}))  # rejected
    return events


def _sessions(pages: list[Page]) -> dict[str, dict]:
    """Every record, without its creation time (that is when it was applied, which differs)."""
    return {sid: {k: v for k, v in r.items() if k != "c"} for page in pages for sid, r in page.sessions.items()}


def _registry(root_id: str) -> dict[str, dict]:
    from betaassi_django.client import get_client

    return _sessions(load_registry(get_client(), root_id)[1])


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_repeats_nothing():
    """500 mixed events; the processor is killed (SIGKILL) 20+ times while applying them, then restarted.
    The final registry equals the one the event log implies, revisions included (nothing applied twice), and
    the local tables equal it: each event's recorded verdict, and the Session mirror."""
    rng = random.Random(11)
    support = Support.objects.create()
    events = _mixed_events(rng, 500, get_user_model().objects.create_user("mixed").pk)
    ids = [publish(support, event) for event in events]

    expected_root, expected_pages = Root("r", ["p"]), [Page("p")]
    verdicts = apply_events(expected_root, expected_pages,
                            [(i, e.to_json()) for i, e in zip(ids, events, strict=True)], 0).outcomes
    expected = _sessions(expected_pages)

    kills = 0
    while kills < 22:
        process = _processor("--interval", "0.05", "--assistant", support.id, "--holder", "crashy",
                             "--lease-seconds", "5")
        time.sleep(rng.uniform(0.3, 1.5))
        process.kill()
        process.wait()
        kills += 1
    final = _processor("--once", "--assistant", support.id, "--holder", "crashy")
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output

    assert _registry(support.metadata[REGISTRY_KEY]) == expected
    assert PublishedEvent.objects.filter(assistant_id=support.id).count() == 500
    assert PublishedEvent.objects.filter(assistant_id=support.id, status="rejected").count() == sum(
        1 for e in events if e.op == "session.fly")
    recorded = dict(PublishedEvent.objects.filter(assistant_id=support.id).values_list("event_id", "status"))
    assert recorded == {o.event_id: o.status for o in verdicts}
    mirror = {s.session_id: (s.model, s.revision) for s in Session.objects.filter(assistant_id=support.id)}
    assert mirror == {sid: (r.get("m"), r["r"]) for sid, r in expected.items()}
    assert support.metadata[PUBLISH_KEY]


def _holdings(output: str) -> list[tuple[str, str, float, float]]:
    """(assistant, holder, start, end) from the processors' lease log lines."""
    import re

    open_: dict[tuple[str, str], float] = {}
    spans = []
    for line in output.splitlines():
        match = re.search(r"lease (acquired|released) assistant=(\S+) holder=(\S+) t=([\d.]+)", line)
        if not match:
            continue
        what, assistant, holder, at = match.group(1), match.group(2), match.group(3), float(match.group(4))
        if what == "acquired":
            open_[(assistant, holder)] = at
        else:
            spans.append((assistant, holder, open_.pop((assistant, holder)), at))
    return spans


@pytest.mark.slow
def test_three_processors_share_twenty_assistants_and_never_hold_one_together():
    import itertools
    import threading

    from django.db import connection

    from betaassi_django.publishing.events import Rejected

    assistants = [Support.objects.create() for _ in range(20)]
    processes = [_processor("--interval", "0.05", "--holder", f"proc{n}") for n in range(3)]
    rng = random.Random(5)
    owner = get_user_model().objects.create_user("mixed").pk
    plans = [[(rng.choice(assistants), event) for event in _mixed_events(random.Random(n), 60, owner)]
             for n in range(4)]

    def publisher(plan) -> None:
        try:
            for assistant, event in plan:
                publish(assistant, event)
        finally:
            connection.close()

    threads = [threading.Thread(target=publisher, args=(plan,)) for plan in plans]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 120
        while PublishedEvent.objects.count() < 240 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        outputs = []
        for process in processes:
            process.send_signal(signal.SIGTERM)
            outputs.append(process.communicate(timeout=60)[0])
    assert PublishedEvent.objects.count() == 240

    for assistant in assistants:  # each registry is exactly what its own event log implies
        events = [(event_id, event.to_json()) for event_id, event in assistant.queue.events()
                  if not isinstance(event, Rejected)]
        root, pages = Root("r", ["p"]), [Page("p")]
        apply_events(root, pages, events, 0)
        assert _registry(assistant.metadata[REGISTRY_KEY]) == _sessions(pages)

    spans = [span for output in outputs for span in _holdings(output)]
    assert len({holder for _, holder, _, _ in spans}) == 3  # every processor did some of the work
    for assistant in assistants:
        held = sorted((start, end, holder) for a, holder, start, end in spans if a == assistant.id)
        for (_, end, holder), (start, _, other) in itertools.pairwise(held):
            assert start >= end or holder == other, f"{holder} and {other} held {assistant.id} together"


def test_publishers_wake_a_processor_in_another_process_through_redis(settings):
    """The processor polls every 30 s, yet applies the event at once: the wake-up crossed Redis."""
    from channels.layers import channel_layers

    redis_url = "redis://127.0.0.1:6379/0"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [redis_url]}}}
    channel_layers.backends.clear()
    user = get_user_model().objects.create_user("carol")
    support = Support.objects.create()
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "REDIS_URL": redis_url}
    process = subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", "--interval", "30",
                                "--assistant", support.id], cwd=settings.BASE_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "processing publish queues" in process.stdout.readline()  # started
        time.sleep(1)  # its first pass found nothing; it now waits up to 30 s
        started = time.monotonic()
        event_id = support.sessions.create("woken", owner=user)
        assert _wait_for(event_id, timeout=20) == "applied"
        assert time.monotonic() - started < 10
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        channel_layers.backends.clear()
    assert process.returncode == 0, output
