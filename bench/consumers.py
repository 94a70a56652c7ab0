"""Issue 15: a durable consumer's cost: events per second against listing the same messages with the SDK,
publish-to-handled with wake-up against the processor's publish-to-applied in the same run, and backend calls
per batch of 100 events (target: 1 list + 1 position write).

Runs with ``make bench``, or alone: ``python -m bench consumers`` (a scratch database of the kind DATABASE_URL
names; no daphne: every call goes to the embedded API in-process).
"""

from __future__ import annotations

import random
import threading
import time

import openai

from betaassi_django.client import get_client, use_clients
from betaassi_django.models import PublishedEvent, StreamThread
from betaassi_django.publishing import notify
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.consumer import Consumer
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.publishing.publisher import publish
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

from .report import Timing, add, add_timing

NAME = "consumers"
EVENTS = 1000
BATCH = 100


def registered(names: list[str]) -> Support:
    """A new assistant with these consumers registered, as ``register`` does it: a position thread each, then
    ``consumer.register`` events the processor applies (here, at once)."""
    support = Support.objects.create()
    for name in names:
        thread = StreamThread.objects.create(consumer=name, assistant_id=support.id)
        publish(support, Event("consumer.register", None, {"name": name, "thread_id": thread.id}))
    Processor(assistant_ids=[support.id]).run_once()
    return support


def calls_per_batch() -> None:
    """One poll of 100 events and its commit, counted at the transport (the consumer already holds its lease)."""
    support = registered(["bench-calls"])
    client, calls = counting_client()
    with use_clients(client):
        consumer = Consumer("bench-calls", assistant_ids=[support.id], batch_size=BATCH)
        consumer.poll()  # the lease, the position, and past the registration event (hidden from consumers)
        consumer.commit()
        for index in range(BATCH):
            support.publish("bench.tick", index)
        calls.clear()
        handed = consumer.poll()
        consumer.commit()
        consumer.close()
    lists = sum(1 for method, path in calls if method == "GET" and path.endswith("/messages"))
    writes = sum(1 for method, _ in calls if method == "POST")
    met = len(handed) == BATCH and (lists, writes) == (1, 1) and len(calls) == 2
    add(NAME, f"calls per batch of {BATCH} events", f"{lists} list + {writes} position write(s) = {len(calls)}",
        "", f"1 list + 1 write: {'met' if met else 'MISSED'}")


def _drain(support: Support, name: str) -> float:
    """Seconds for a new consumer to hand out every event of the queue (no-op handler) and commit."""
    start = time.perf_counter()
    with Consumer(name, assistant_ids=[support.id], batch_size=BATCH, poll_interval=60) as consumer:
        handled = sum(1 for _ in consumer.events(timeout=0))
    elapsed = time.perf_counter() - start
    assert handled == EVENTS, (handled, EVENTS)
    return elapsed


def _floor(api: openai.OpenAI, publish_id: str) -> float:
    """Seconds to list the same publish thread with the SDK, 100 messages per call, to the end."""
    start = time.perf_counter()
    after, listed = openai.omit, 0
    while page := api.beta.threads.messages.list(publish_id, order="asc", limit=BATCH, after=after).data:
        listed, after = listed + len(page), page[-1].id
    elapsed = time.perf_counter() - start
    assert listed >= EVENTS, listed
    return elapsed


def throughput(rounds: int = 5) -> None:
    """The best of ``rounds`` drains by a fresh consumer and of the SDK floor, in alternating order."""
    names = [f"bench-rate-{index}" for index in range(rounds)]
    support = registered(names)
    for index in range(EVENTS):
        support.publish("bench.tick", {"n": index})
    api, publish_id = get_client(), support.metadata[PUBLISH_KEY]
    _floor(api, publish_id)  # warm-up
    best_consumer, best_floor = float("inf"), float("inf")
    for round_, name in enumerate(names):
        if round_ % 2 == 0:
            best_floor = min(best_floor, _floor(api, publish_id))
            best_consumer = min(best_consumer, _drain(support, name))
        else:
            best_consumer = min(best_consumer, _drain(support, name))
            best_floor = min(best_floor, _floor(api, publish_id))
    add(NAME, f"SDK floor: list the same {EVENTS} messages", f"{EVENTS / best_floor:8.0f} events/s")
    add(NAME, f"one consumer, {EVENTS} app events, batch {BATCH}", f"{EVENTS / best_consumer:8.0f} events/s",
        f"{best_consumer / best_floor:.2f}x", "report (time vs the SDK floor)")


def latency(samples: int) -> None:
    """Publish-to-handled (a consumer woken by the publish, polling only every 1 s) and publish-to-applied (the
    processor, woken the same way), for the same events, measured together."""
    support = registered(["bench-latency"])
    handled: dict[str, float] = {}
    stop = threading.Event()

    def process() -> None:
        processor = Processor(assistant_ids=[support.id])
        while not stop.is_set():
            notify.local_wake.clear()
            processor.run_once()
            notify.local_wake.wait(0.2)

    def consume() -> None:
        with Consumer("bench-latency", assistant_ids=[support.id], poll_interval=1.0) as consumer:
            while not stop.is_set():
                for event in consumer.events(timeout=0.3):
                    handled[event.id] = time.perf_counter()

    workers = [threading.Thread(target=process, daemon=True), threading.Thread(target=consume, daemon=True)]
    for worker in workers:
        worker.start()
    to_handled, to_applied = Timing(), Timing()
    pause = random.Random(15)
    for index in range(samples + 3):  # the first three warm both up
        time.sleep(pause.uniform(0, 0.2))  # publish at any point of either loop
        start = time.perf_counter()
        event_id = support.publish("bench.ping", index)
        applied = None
        while applied is None or event_id not in handled:
            if applied is None and PublishedEvent.objects.filter(event_id=event_id).exists():
                applied = time.perf_counter()
            time.sleep(0.001)
        if index >= 3:
            to_handled.samples.append(handled[event_id] - start)
            to_applied.samples.append(applied - start)
    stop.set()
    notify.local_wake.set()
    for worker in workers:
        worker.join()
    add_timing(NAME, "processor: publish-to-applied, with wake-up", to_applied)
    add_timing(NAME, "consumer: publish-to-handled, with wake-up", to_handled, to_handled.p50_ms / to_applied.p50_ms,
               f"p50 < 50 ms: {'met' if to_handled.p50_ms < 50 else 'MISSED'} (vs the processor, p50)")


def run(samples: int) -> None:
    calls_per_batch()
    throughput()
    latency(samples)
