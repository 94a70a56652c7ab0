"""Session ids aimed at one registry bucket by an adversary who knows the secret: they all fit.

Ids are computed against the registry's actual keyed hash. Ids that agree on the hash's low 8 bits share a
bucket at every size the root can hold (at most 256 buckets), so to the registry they collide on the whole
hash: doubling never separates them, and they must spill into overflow pages.
"""

from __future__ import annotations

import itertools

import openai
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from betaassi_django.assistants_api.models import Thread as StoredThread
from betaassi_django.client import build_client, get_client, use_clients
from betaassi_django.metadata import MAX_PAIRS, MAX_VALUE_LENGTH
from betaassi_django.models import PublishedEvent, PublishState, Session
from betaassi_django.publishing.apply import NO_ROOM, apply_events, record_for
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY, load_registry
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.processor import Processor
from betaassi_django.registry.pages import Page, encode_run, overflow_metadata, page_threads
from betaassi_django.registry.root import Root, bucket_hash, new_key, put
from tests.conftest import client_of
from tests.spec import ValidatingTransport
from tests.testapp.models import Support

FAT_MODEL = "m" * 100


def colliding_ids(key: str, count: int, *, width: int = 60, target: int = 0) -> list[str]:
    """``count`` session ids of ``width`` characters whose keyed hash ends in the byte ``target``."""
    found = []
    for index in itertools.count():
        candidate = f"x-{index}".rjust(width, "0")
        if bucket_hash(candidate, key) & 0xFF == target:
            found.append(candidate)
            if len(found) == count:
                return found
    raise AssertionError


def _fits_metadata(metadata: dict[str, str]) -> bool:
    return len(metadata) <= MAX_PAIRS and all(len(k) <= 64 and len(v) <= MAX_VALUE_LENGTH
                                              for k, v in metadata.items())


def _fat_record(owner: int) -> dict:
    return record_for({"owner": owner, "kind": "manyshots", "context_messages": 1000, "model": FAT_MODEL,
                       "thread_id": "thread_" + "a" * 24}, 1795579130)


def test_a_thousand_colliding_fat_sessions_fit_and_each_is_found_through_one_overflow_page():
    key = new_key()
    root, pages = Root("thread_root", ["thread_head0"], key=key), [Page("thread_head0")]
    ids = colliding_ids(key, 1000)
    made = iter(range(1, 10**6))
    for session_id in ids:
        put(root, pages, session_id, _fat_record(7), lambda: Page(f"thread_{next(made):024d}"))
    bucket = pages[root.bucket(ids[0])]
    assert all(root.bucket(session_id) == root.bucket(ids[0]) for session_id in ids)
    assert len(bucket.sessions) == 1000 and bucket.fits() and not bucket.fits_head()

    # Written as the processor writes it: one overflow thread per run, the head holds their directory.
    runs = bucket.runs()
    stored = {f"thread_over{n:020d}": overflow_metadata(encode_run(run)) for n, run in enumerate(runs)}
    directory = [(min(run), thread_id) for run, thread_id in zip(runs, stored, strict=True)]
    head = bucket.head_metadata(directory)
    assert _fits_metadata(head) and all(_fits_metadata(m) for m in stored.values())
    assert sum(len(run) for run in runs) == 1000

    read = Page.from_metadata(bucket.thread_id, head)
    assert read.sessions == {} and [t for _, t in read.directory] == list(stored)
    for session_id in ids:  # a lookup reads the root, the head, then exactly one overflow page
        alone = Page.from_metadata(bucket.thread_id, head)
        overflow = alone.overflow_for(session_id)
        alone.absorb(overflow, stored[overflow])
        assert alone.sessions[session_id] == _fat_record(7)
    for thread_id, metadata in stored.items():
        read.absorb(thread_id, metadata)
    assert read.sessions == bucket.sessions


def test_past_its_bound_a_bucket_rejects_the_event_and_the_fold_goes_on():
    key = new_key()
    pages = [Page("thread_head0"), Page("thread_head1")]
    root = Root("thread_root", [p.thread_id for p in pages], key=key)
    for session_id in colliding_ids(key, 1500):
        pages[0].put(session_id, _fat_record(7))
    assert pages[0].fits()
    extra = colliding_ids(key, 1700)[1500:]
    events = [(f"e{n}", Event("session.create", session_id, {"owner": 7, "kind": "manyshots", "context_messages": 9,
                                                               "model": FAT_MODEL}).to_json())
              for n, session_id in enumerate(extra)]
    elsewhere = colliding_ids(key, 1, target=1)[0]  # the other bucket
    events.append(("e-last", Event("session.create", elsewhere, {"owner": 7}).to_json()))
    batch = apply_events(root, pages, events, 1795579130)
    rejected = [o for o in batch.outcomes if o.status == "rejected"]
    assert rejected and all(o.reason == NO_ROOM for o in rejected)
    assert batch.outcomes[-1].status == "applied" and pages[0].fits() and elsewhere in pages[1].sessions
    assert len(pages[0].sessions) == 1500 + len(extra) - len(rejected)


@pytest.mark.django_db(transaction=True)
def test_colliding_sessions_with_long_models_through_the_publisher(staff):
    """40 sessions, 100-character models, ids aimed at one bucket: all applied, registry = mirror = admin."""
    user = get_user_model().objects.create_user("mallory", password="x")
    support = Support.objects.create(name="aimed")
    api = get_client()
    key = Root.from_metadata("r", api.beta.threads.retrieve(support.metadata[REGISTRY_KEY]).metadata).key
    ids = colliding_ids(key, 40)
    events = [support.sessions.create(session_id, owner=user, model=FAT_MODEL) for session_id in ids]
    Processor().run_once()
    assert set(PublishedEvent.objects.filter(event_id__in=events).values_list("status", flat=True)) == {"applied"}
    root, pages = load_registry(api, support.metadata[REGISTRY_KEY])
    bucket = pages[root.bucket(ids[0])]
    assert set(bucket.sessions) == set(ids) and bucket.directory  # in overflow pages
    assert not PublishState.objects.filter(failures__gt=0).exists()

    transports = []
    counting = build_client(max_retries=0, wrap_transport=lambda t: transports.append(ValidatingTransport(t, "x"))
                            or transports[-1])
    with use_clients(counting):
        for session_id in ids:
            transports[0].requests.clear()
            session = support.sessions.get(session_id)
            assert (session.owner_id, session.model) == (user.pk, FAT_MODEL)
            reads = [m for m, _ in transports[0].requests]  # the root is kept after the first lookup
            assert reads == (["GET", "GET", "GET"] if session_id == ids[0] else ["GET", "GET"])

    # Change some, delete some: still one layout, the same in the registry, the mirror and the admin.
    for session_id in ids[:5]:
        support.sessions.update(session_id, model="m-short")
    for session_id in ids[5:10]:
        support.sessions.delete(session_id)
    Processor().run_once()
    registry = {s.session_id: (s.model, s.thread_id) for s in support.sessions.list()}
    mirror = {s.session_id: (s.model, s.thread_id) for s in Session.objects.filter(assistant_id=support.id)}
    assert registry == mirror and set(registry) == set(ids[:5] + ids[10:])
    assert all(registry[session_id][0] == "m-short" for session_id in ids[:5])
    page = client_of(staff).get(reverse("admin:betaassi_django_session_changelist") + f"?assistant={support.id}")
    assert page.status_code == 200
    text = page.content.decode()
    assert all(session_id in text for session_id in registry) and not any(s in text for s in ids[5:10])
    assert f"{len(registry)} sessions" in text

    # No thread is left behind: every stored thread is the queue's, the registry's or a session's.
    root, pages = load_registry(api, support.metadata[REGISTRY_KEY])
    expected = {support.metadata[PUBLISH_KEY], root.thread_id, *(t for p in pages for t in page_threads(p)),
                *(t for _, t in registry.values())}
    assert set(StoredThread.objects.values_list("id", flat=True)) == expected


@pytest.mark.django_db(transaction=True)
def test_a_registry_of_the_old_layout_is_read_then_rehashed_under_a_key():
    user = get_user_model().objects.create_user("old", password="x")
    support = Support.objects.create()
    api = get_client()
    root_id = support.metadata[REGISTRY_KEY]
    root, pages = load_registry(api, root_id)
    # What the previous version wrote: no key, sessions where crc32 puts them (one page: all in it).
    legacy = Page(pages[0].thread_id, {f"s{n}": record_for({"owner": user.pk}, 1795579130) for n in range(30)})
    api.beta.threads.update(legacy.thread_id, metadata=legacy.to_metadata())
    api.beta.threads.update(root_id, metadata={**Root(root_id, root.page_ids).to_metadata(), "key": ""})
    assert Root.from_metadata(root_id, api.beta.threads.retrieve(root_id).metadata).key == ""
    assert support.sessions.get("s7").owner_id == user.pk  # readable as it is

    support.sessions.create("new", owner=user)
    Processor().run_once()
    root, pages = load_registry(api, root_id)
    assert len(root.key) == 32 and root.page_ids != [legacy.thread_id]
    assert sorted(s.session_id for s in support.sessions.list()) == sorted([*(f"s{n}" for n in range(30)), "new"])
    assert support.sessions.get("s7").owner_id == user.pk
    with pytest.raises(openai.NotFoundError):  # the old page thread was let go of
        api.beta.threads.retrieve(legacy.thread_id)
