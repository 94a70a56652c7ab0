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

from betaassi_django.models import PublishedEvent
from betaassi_django.publishing.apply import apply_events
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY, load_registry
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.publisher import publish
from betaassi_django.publishing.registry import Page, Root
from tests.conftest import shared_database_url
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _processor(*args: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
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
        event_id = support.create_session("live", owner=user)
        assert _wait_for(event_id) == "applied"
        assert support.get_session("live").owner == user
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert output.strip().endswith("stopped")


def _mixed_events(rng: random.Random, count: int) -> list[Event]:
    events = []
    for index in range(count):
        session_id = f"s{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.35:
            events.append(Event("session.create", session_id, {"owner": 1, "thread_id": f"thread_{index:024d}"}))
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
    The final registry equals the one the event log implies, revisions included (nothing applied twice)."""
    rng = random.Random(11)
    support = Support.objects.create()
    events = _mixed_events(rng, 500)
    ids = [publish(support, event) for event in events]

    expected_root, expected_pages = Root("r", ["p"]), [Page("p")]
    apply_events(expected_root, expected_pages, [(i, e.to_json()) for i, e in zip(ids, events, strict=True)], 0)
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
    assert support.metadata[PUBLISH_KEY]
