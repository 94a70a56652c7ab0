"""``consume_queue`` as real processes: SIGKILL before a commit, three processes sharing one name, poison events,
SIGTERM. The handlers below run in those processes; they append what they did to the file ``CONSUMER_LOG`` names."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from betaassi_django.client import get_client
from betaassi_django.metadata import PUBLISH_KEY
from betaassi_django.models import ConsumerFailure, ConsumerLease
from betaassi_django.publishing import directory
from betaassi_django.publishing.positions import register
from betaassi_django.publishing.queue_event import QueueEvent
from tests.conftest import shared_database_url
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def _log(line: str) -> None:
    with open(os.environ["CONSUMER_LOG"], "a") as out:
        out.write(line + "\n")
        out.flush()


def handler(event: QueueEvent) -> None:
    """Records each event; ``boom`` raises; ``slow`` takes half a second; with CONSUMER_BLOCK, ``block`` never
    returns once recorded (the test kills the process there: handled, not committed)."""
    if event.type == "boom":
        raise RuntimeError(f"boom {event.data}")
    if event.type == "slow":
        _log(f"start {event.id}")
        time.sleep(0.5)
    _log(f"done {event.id}")
    if event.type == "block" and os.environ.get("CONSUMER_BLOCK"):
        time.sleep(600)
    time.sleep(float(os.environ.get("CONSUMER_SLEEP", "0")))


def _consume(log: Path, *args: str, **env: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "LOG_LEVEL": "DEBUG", "CONSUMER_LOG": str(log), **env}
    return subprocess.Popen([sys.executable, "manage.py", "consume_queue", *args, "--handler",
                             "tests.test_consumer_processes.handler"], cwd=settings.BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _position(assistant, name: str) -> str:
    api = get_client()
    thread_id = directory.read(api, assistant.metadata[PUBLISH_KEY])[name]
    return api.beta.threads.retrieve(thread_id).metadata.get("hwm", "")


def test_sigkill_between_handling_and_committing_hands_the_events_out_again(processor, tmp_path):
    support = Support.objects.create()
    register(get_client(), support, "mailer")
    ids = [support.publish(kind, n) for n, kind in enumerate(["a", "b", "block", "c", "d"])]
    log = tmp_path / "handled.log"
    first = _consume(log, "mailer", "--assistant", support.id, "--interval", "0.1", "--holder", "crashy",
                     CONSUMER_BLOCK="1")
    try:
        _until(lambda: len(_lines(log)) == 3)
    finally:
        first.kill()
        first.wait()
    assert _position(support, "mailer") == ""  # handled three, committed none
    again = _consume(log, "mailer", "--assistant", support.id, "--once", "--holder", "crashy")  # its lease back
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0, output
    assert "handled 5 event(s), 0 recorded as failed" in output
    assert _lines(log) == [f"done {i}" for i in ids[:3]] + [f"done {i}" for i in ids]  # the same ids again
    assert _position(support, "mailer") == ids[-1]


def test_poison_events_are_recorded_as_failures_and_the_consumer_goes_on(processor, tmp_path):
    support = Support.objects.create()
    register(get_client(), support, "poison")
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    good = support.publish("fine", 1)
    junk = api.beta.threads.messages.create(publish_id, role="user", content='{"v": 1, "op":').id
    boom = support.publish("boom", 7)
    last = support.publish("fine", 2)
    log = tmp_path / "handled.log"
    process = _consume(log, "poison", "--assistant", support.id, "--once", "--max-attempts", "3",
                       "--retry-delay", "0.01")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "handled 2 event(s), 2 recorded as failed" in output
    assert _lines(log) == [f"done {good}", f"done {last}"]
    failures = {(f.consumer, f.assistant_id, f.event_id, f.event_type, f.attempts, f.error)
                for f in ConsumerFailure.objects.all()}
    assert failures == {("poison", support.id, junk, "", 0, "not a valid event: not valid JSON"),
                        ("poison", support.id, boom, "boom", 3, "RuntimeError: boom 7")}
    assert f"consumer=poison event={boom} assistant={support.id} type=boom status=failed attempts=3 " \
           "error=RuntimeError: boom 7" in output
    assert output.count(f"event={boom} assistant={support.id} type=boom attempt ") == 2  # two retries logged
    assert _position(support, "poison") == last


def test_sigterm_stops_after_the_current_event_and_commits_it(processor, tmp_path):
    support = Support.objects.create()
    register(get_client(), support, "graceful")
    ids = [support.publish("slow", n) for n in range(3)]
    log = tmp_path / "handled.log"
    process = _consume(log, "graceful", "--assistant", support.id, "--interval", "0.1")
    try:
        _until(lambda: _lines(log) == [f"start {ids[0]}"])
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert output.strip().endswith("stopped")
    assert _lines(log) == [f"start {ids[0]}", f"done {ids[0]}"]
    assert _position(support, "graceful") == ids[0]
    assert not ConsumerLease.objects.filter(consumer="graceful").exists()  # released on the way out


def _spans(output: str) -> list[tuple[str, float, float]]:
    """(holder, start, end) of each holding of the lease, from the consumer's lease log lines."""
    opened: dict[str, float] = {}
    spans = []
    for match in re.finditer(r"consumer lease (acquired|released) consumer=\S+ assistant=\S+ holder=(\S+) "
                             r"t=([\d.]+)", output):
        what, holder, at = match.group(1), match.group(2), float(match.group(3))
        if what == "acquired":
            opened[holder] = at
        else:
            spans.append((holder, opened.pop(holder), at))
    return spans


def test_three_processes_share_one_name_never_hold_it_together_and_handle_every_event(processor, tmp_path):
    support = Support.objects.create()
    register(get_client(), support, "shared")
    ids = [support.publish("item", n) for n in range(45)]
    log = tmp_path / "handled.log"
    processes = {f"c{n}": _consume(log, "shared", "--assistant", support.id, "--interval", "0.05", "--holder",
                                   f"c{n}", "--lease-seconds", "20", CONSUMER_SLEEP="0.05") for n in range(3)}
    outputs = {}
    try:
        for count in (15, 30):  # stop whoever holds it, twice: another process takes over each time
            _until(lambda count=count: len(_lines(log)) >= count)
            holder = ConsumerLease.objects.get(consumer="shared", assistant_id=support.id).holder
            processes[holder].send_signal(signal.SIGTERM)
            outputs[holder] = processes[holder].communicate(timeout=60)[0]
        _until(lambda: len(_lines(log)) >= 45)
    finally:
        for holder, process in processes.items():
            if holder not in outputs:
                process.send_signal(signal.SIGTERM)
                outputs[holder] = process.communicate(timeout=60)[0]
    assert all(p.returncode == 0 for p in processes.values()), outputs
    assert _lines(log) == [f"done {i}" for i in ids]  # each once, in order: a stop commits what was handled
    assert _position(support, "shared") == ids[-1]
    spans = sorted((start, end, holder) for output in outputs.values() for holder, start, end in _spans(output))
    assert {holder for _, _, holder in spans} == {"c0", "c1", "c2"}
    for (_, end, holder), (start, _, other) in itertools.pairwise(spans):
        assert start >= end, f"{holder} and {other} held the consumer together"
    handled = [(m.group(2), float(m.group(3))) for output in outputs.values() for m in re.finditer(
        r"consumer=shared event=(\S+) .* status=handled attempts=1 holder=(\S+) t=([\d.]+)", output)]
    assert len(handled) == 45
    for holder, at in handled:  # each event was handled while its process held the lease
        assert any(h == holder and start <= at <= end for start, end, h in spans)


def test_once_with_a_class_handles_every_assistant_of_it_and_only_those(processor, tmp_path, monkeypatch):
    from django.core.management import call_command

    from tests.testapp.models import Kitchen

    first, second, other = Support.objects.create(), Support.objects.create(), Kitchen.objects.create()
    for assistant in (first, second):
        register(get_client(), assistant, "per-class")
    expected = {first.publish("x", 1), second.publish("x", 2)}
    other.publish("x", 3)
    log = tmp_path / "handled.log"
    monkeypatch.setenv("CONSUMER_LOG", str(log))
    call_command("consume_queue", "per-class", "--once", "--class", "testapp.Support", "--handler",
                 "tests.test_consumer_processes.handler")
    assert set(_lines(log)) == {f"done {i}" for i in expected} and len(_lines(log)) == 2
    assert not directory.read(get_client(), other.metadata[PUBLISH_KEY])
