"""Issue 16, scale: 100,000 sessions on one assistant (in-process embedded backend, scratch database).

The seed: 100,000 ``session.create`` events (owner only, no thread: a thread per session would take the store
minutes) are folded into the registry by the processor's own fold (``apply.apply_events``, doubling with
``registry.double``) in memory, then the registry is written once, as the processor writes a batch (overflow
runs, heads, then the root). No publish-thread message is written for them. Then, at that size, measured
through the public paths:

- a lookup: ``assistant.sessions.get(id)``, backend reads counted at the transport (``counting_client``);
- the registry: buckets, overflow pages, and the characters of metadata (keys and values) of all its threads;
- creation through the queue: ``CREATED`` ``sessions.create`` calls (thread, then event) with a processor
  woken by each publish, until the last is applied; alternated with the same on a fresh assistant and with
  the store's two writes alone (a thread, a message: the per-call path's ceiling);
- the processor alone: ``DRAINED`` session.create events published first, then one ``run_once`` applies them
  (events per second, and backend calls per event), at 100,000 and on a fresh assistant.

Each assistant has one processor for the whole run, as a deployment keeps it (its first drain, before any
measurement, reads the whole registry).
"""

from __future__ import annotations

import os
import random
import time

from django.contrib.auth import get_user_model

from betaassi_django.client import get_client, use_clients
from betaassi_django.metadata import PUBLISH_KEY, REGISTRY_KEY
from betaassi_django.publishing.apply import apply_events
from betaassi_django.publishing.backend import load_registry
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.registry.pages import Page, encode_run, overflow_metadata, page_threads
from betaassi_django.registry.root import double, needs_growth
from betaassi_django.testing import counting_client
from tests.testapp.models import Support

from .publishing import create_rate
from .report import add

NAME = "scale"
SESSIONS, CREATED, DRAINED, TARGET_RATE = 100_000, 300, 1000, 300


def _sizes() -> tuple[int, int, int]:
    small = os.environ.get("BENCH_SCALE") == "small"
    return (SESSIONS // 10, CREATED // 3, DRAINED // 5) if small else (SESSIONS, CREATED, DRAINED)


def seed(support, owner: int, count: int) -> None:
    """``count`` sessions ``chat-<8 hex>`` folded in memory by the processor's fold, then written once."""
    api = get_client()
    root, pages = load_registry(api, support.metadata[REGISTRY_KEY])
    hwm, first_threads = root.hwm, [t for page in pages for t in page_threads(page)]
    now, done, placeholder = int(time.time()), 0, iter(range(10**9))
    while done < count:
        step = min(10_000, count - done, 40 * len(pages))  # a bucket is never asked to hold a flood
        events = [(f"seed-{i}", Event("session.create", f"chat-{i:08x}", {"owner": owner}).to_json())
                  for i in range(done, done + step)]
        batch = apply_events(root, pages, events, now)
        assert all(o.status == "applied" for o in batch.outcomes)
        while needs_growth(root, pages):
            pages = double(root, pages, lambda: Page(f"thread_seed{next(placeholder):017d}"))
        done += step
    for page in pages:  # as the processor commits a batch: overflow runs, then each head, then the root
        page.thread_id, page.applied = api.beta.threads.create(metadata=Page("").to_metadata()).id, hwm
        directory = [(min(run), api.beta.threads.create(metadata=overflow_metadata(encode_run(run))).id)
                     for run in page.runs()]
        api.beta.threads.update(page.thread_id, metadata=page.head_metadata(directory))
    root.page_ids, root.hwm = [page.thread_id for page in pages], hwm
    api.beta.threads.update(root.thread_id, metadata=root.to_metadata())
    for thread_id in first_threads:
        api.beta.threads.delete(thread_id)


def registry_size(support) -> tuple[int, int, int]:
    """Buckets, overflow pages, and characters of metadata over the root, the heads and the overflow pages."""
    api = get_client()
    root, pages = load_registry(api, support.metadata[REGISTRY_KEY])
    threads = [root.thread_id, *(t for page in pages for t in page_threads(page))]
    chars = sum(len(k) + len(v) for t in threads for k, v in (api.beta.threads.retrieve(t).metadata or {}).items())
    return len(pages), sum(len(page.directory) for page in pages), chars


def lookups(support, count: int, samples: int = 50) -> list[int]:
    """Backend requests of ``sessions.get`` for random seeded ids (the first one in this process reads the root)."""
    client, calls = counting_client(backend="embedded")
    reads = []
    with use_clients(client):
        for index in random.Random(7).sample(range(count), samples):
            calls.clear()
            assert support.sessions.get(f"chat-{index:08x}") is not None
            reads.append(len(calls))
    return reads


def store_floor(support, count: int) -> float:
    """Sessions per second the store allows the per-call path: its two writes alone (a tagged thread, then a
    message on the publish thread), no validation, no processor."""
    api = get_client()
    publish_id = support.metadata[PUBLISH_KEY]
    start = time.perf_counter()
    for index in range(count):
        thread = api.beta.threads.create(metadata={"betaassi_session": f"floor-{index}"})
        api.beta.threads.messages.create(publish_id, role="user", content=thread.id)
    return count / (time.perf_counter() - start)


def drain_rate(support, processor: Processor, user, count: int, tag: str) -> tuple[float, float]:
    """Events per second and backend calls per event of one ``run_once`` applying ``count`` session.create."""
    for index in range(count):
        support.sessions.create(f"{tag}-{index}", owner=user)
    client, calls = counting_client(backend="embedded")
    processor.api = client  # the same processor (finding and draining), its requests counted
    with use_clients(client):
        start = time.perf_counter()
        seen = processor.run_once()
        elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed, len(calls) / count


def run() -> None:
    sessions, created, drained = _sizes()
    user = get_user_model().objects.create_user(f"scale-{time.time_ns()}")
    big, fresh = Support.objects.create(name="100k"), Support.objects.create(name="fresh")
    unserved = Support.objects.create(name="floor")  # no processor: its queue holds the floor's messages
    start = time.perf_counter()
    seed(big, user.pk, sessions)
    seeded = time.perf_counter() - start
    buckets, overflow, chars = registry_size(big)
    reads = lookups(big, sessions)
    # One processor per assistant, as a deployment keeps it: its first drain reads the whole registry.
    processors = {"big": Processor(assistant_ids=[big.id]), "fresh": Processor(assistant_ids=[fresh.id])}
    for processor in processors.values():
        processor.run_once()
    add(NAME, f"{sessions} sessions: registry", f"{buckets} buckets + {overflow} overflow pages, "
        f"{chars / 1e6:.2f} MB of metadata; seeded in {seeded:.0f} s")
    add(NAME, f"{sessions} sessions: sessions.get", f"backend reads per lookup: the first {reads[0]} (the root, the "
        f"head, one overflow page), then {min(reads[1:])}-{max(reads[1:])} ({len(reads) - 1} more)",
        "", f"2 reads: {'met' if max(reads[1:]) <= 2 else 'MISSED'}")
    rates: dict[str, list[float]] = {"fresh": [], "big": [], "floor": []}
    for round_, order in enumerate((("fresh", "big", "floor"), ("floor", "big", "fresh"))):
        for which in order:
            if which == "floor":
                rates[which].append(store_floor(unserved, created // 2))
                continue
            support = big if which == "big" else fresh
            rates[which].append(create_rate(support, processors[which], user, created // 2, f"c{round_}"))
    big_rate, fresh_rate, floor = (sum(r) / len(r) for r in (rates["big"], rates["fresh"], rates["floor"]))
    add(NAME, f"{sessions} sessions: sessions.create through the queue ({created})",
        f"{big_rate:6.0f} sessions/s (fresh assistant {fresh_rate:.0f}/s; the store's two writes alone "
        f"{floor:.0f}/s)", f"{big_rate / fresh_rate:.2f}x",
        f">= {TARGET_RATE}/s: {'met' if big_rate >= TARGET_RATE else 'MISSED'}")
    drains = {which: drain_rate(big if which == "big" else fresh, processors[which], user, drained, f"d-{which}")
              for which in ("fresh", "big")}
    (big_eps, big_calls), (fresh_eps, fresh_calls) = drains["big"], drains["fresh"]
    add(NAME, f"{sessions} sessions: processor applies {drained} session.create",
        f"{big_eps:6.0f} events/s, {big_calls:.2f} backend calls/event (fresh {fresh_eps:.0f}/s, "
        f"{fresh_calls:.2f} calls/event)", f"{big_eps / fresh_eps:.2f}x", "report")
