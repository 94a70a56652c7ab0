"""Issue 4: backend calls per batch against the seed's algorithm, wake-up latency, sessions per second.
Issue 11: the processor's throughput when 1% of the events are poison (rejected, never a stall)."""

from __future__ import annotations

import json
import random
import threading
import time

from django.contrib.auth import get_user_model

from betaassi_django.client import get_client, use_clients
from betaassi_django.models import PublishedEvent
from betaassi_django.publishing import notify
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

from .report import Timing, add, add_timing

NAME = "publish queue"


def seed_algorithm(assistant_id: str, publish_id: str) -> None:
    """The seed's processor: list 3 events at a time, retrieve each again, write the assistant per event."""
    api = get_client()
    hwm, assistant = None, None
    while True:
        page = api.beta.threads.messages.list(publish_id, order="asc", limit=3, **({"after": hwm} if hwm else {}))
        if not page.data:
            return
        for listed in page.data:
            message = api.beta.threads.messages.retrieve(listed.id, thread_id=publish_id)
            event = json.loads(message.content[0].text.value)
            assistant = assistant or api.beta.assistants.retrieve(assistant_id)
            metadata = dict(assistant.metadata or {})
            metadata[f"s:{event['session_id']}"[:64]] = event["args"].get("model") or ""
            metadata = dict(list(metadata.items())[-16:])
            hwm = message.id
            assistant = api.beta.assistants.update(assistant_id, metadata=metadata)


def calls_per_batch(user) -> None:
    support = Support.objects.create()
    for index in range(50):
        publish(support, Event("session.create", f"s{index}", {"owner": user.pk}))
    Processor(assistant_ids=[support.id]).run_once()
    for index in range(100):
        publish(support, Event("session.update", f"s{index % 50}", {"model": f"m{index}"}))
    client, calls = counting_client()
    with use_clients(client):
        processor = Processor(assistant_ids=[support.id])
        calls.clear()
        processor.run_once()
    lists = [c for c in calls if c[0] == "GET" and c[1].endswith("/messages")]
    writes = [c for c in calls if c[0] == "POST"]
    ours = (len(lists) - 1) + len(writes)  # the last list is the empty one that ends the drain
    add(NAME, "calls per batch of 100 events (ours)", f"{len(lists) - 1} list + {len(writes)} write(s) = {ours}",
        "", f"<= 3: {'met' if ours <= 3 else 'MISSED'}")

    seed = Support.objects.create()
    for index in range(100):
        publish(seed, Event("session.update", f"s{index % 50}", {"model": f"m{index}"}))
    client, calls = counting_client()
    with use_clients(client):
        seed_algorithm(seed.id, seed.metadata[PUBLISH_KEY])
    seed_calls = len(calls)
    add(NAME, "calls per batch of 100 events (seed baseline)", f"{seed_calls} calls",
        f"{seed_calls / ours:.0f}x" if ours else "", "report (seed / ours)")


def _latency(support, user, samples: int, wake: bool) -> Timing:
    timing = Timing()
    stop = threading.Event()

    def loop() -> None:
        processor = Processor(assistant_ids=[support.id])
        if wake:  # the processor as it runs: woken by the publish, draining the queue the wake-up names
            processor.serve(0.2, stop)
            return
        while not stop.is_set():  # its fallback alone: a cycle every 0.2 s finds the event by its hint
            processor.run_pending()
            stop.wait(0.2)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    pause = random.Random(1)
    for index in range(samples):
        time.sleep(pause.uniform(0, 0.2))  # publish at any point of the poll cycle
        start = time.perf_counter()
        event_id = publish(support, Event("session.create", f"{'w' if wake else 'p'}{index}", {"owner": user.pk}))
        while not PublishedEvent.objects.filter(event_id=event_id).exists():
            time.sleep(0.001)
        timing.samples.append(time.perf_counter() - start)
    stop.set()
    notify.local_wake.set()
    worker.join()
    return timing


def create_rate(support, processor: Processor, user, count: int, tag: str) -> float:
    """Sessions per second: ``count`` ``sessions.create`` calls with a woken processor, until the last applied."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            notify.local_wake.clear()
            processor.run_once()
            notify.local_wake.wait(0.2)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    start, last = time.perf_counter(), ""
    for index in range(count):
        last = support.sessions.create(f"{tag}-{index}", owner=user)
    while not PublishedEvent.objects.filter(event_id=last).exists():
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    stop.set()
    notify.local_wake.set()
    worker.join()
    return count / elapsed


def latency_and_rate(user, samples: int) -> None:
    support = Support.objects.create()
    polling = _latency(support, user, samples, wake=False)
    woken = _latency(support, user, samples, wake=True)
    add_timing(NAME, "publish-to-applied, polling every 0.2 s", polling)
    ok = woken.p50_ms <= 10
    add_timing(NAME, "publish-to-applied, with wake-up", woken, woken.p50_ms / polling.p50_ms,
               f"p50 <= 10 ms: {'met' if ok else 'MISSED'}")

    rate_support = Support.objects.create()
    count = 300
    rate = create_rate(rate_support, Processor(assistant_ids=[rate_support.id]), user, count, "r")
    add(NAME, f"sessions created through the queue ({count})", f"{rate:8.0f} sessions/s", "", "report")


def _drain_rate(user, count: int, poison: bool) -> tuple[float, int]:
    """Events per second of one processor draining ``count`` events (creates, then updates); with ``poison``,
    every hundredth is a message of 5000 '[' written raw to the publish thread. Also the rejections."""
    support = Support.objects.create()
    queue = support.metadata[PUBLISH_KEY]
    api = get_client()
    for index in range(count):
        if poison and index % 100 == 50:
            api.beta.threads.messages.create(queue, role="user", content="[" * 5000)
        elif index < 200:
            publish(support, Event("session.create", f"t{index}", {"owner": user.pk}))
        else:
            publish(support, Event("session.update", f"t{index % 200}", {"model": f"m{index}"}))
    processor = Processor(assistant_ids=[support.id])
    start = time.perf_counter()
    seen = processor.run_once()
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed, PublishedEvent.objects.filter(assistant_id=support.id, status="rejected").count()


def poison_throughput(user, count: int = 1000, rounds: int = 3) -> None:
    """The best of ``rounds`` runs of each, in alternating order (the machine's other load evens out)."""
    best = {False: 0.0, True: 0.0}
    rejected = 0
    for round_ in range(rounds):
        for poison in (False, True) if round_ % 2 == 0 else (True, False):
            rate, found = _drain_rate(user, count, poison=poison)
            best[poison] = max(best[poison], rate)
            rejected = found if poison else rejected
    clean, poisoned = best[False], best[True]
    add(NAME, f"processor throughput ({count} events)", f"{clean:8.0f} events/s", "", "report")
    ok = rejected == count // 100
    add(NAME, "processor throughput with 1% poison events", f"{poisoned:8.0f} events/s", f"{poisoned / clean:.2f}x",
        f"{rejected} rejected, none stalls: {'met' if ok else 'MISSED'}")


def run(samples: int) -> None:
    user = get_user_model().objects.create_user(f"bench-{time.time_ns()}")
    calls_per_batch(user)
    poison_throughput(user)
    latency_and_rate(user, samples)
