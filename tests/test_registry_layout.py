"""The registry's layout in metadata: linear hashing over page threads."""

from __future__ import annotations

import random

import pytest

from betaassi_django.metadata import MAX_PAIRS, MAX_VALUE_LENGTH
from betaassi_django.registry.layout import RegistryFull
from betaassi_django.registry.pages import Page
from betaassi_django.registry.root import Root, double, put


def _record(index: int) -> dict:
    return {"o": 1000 + index, "k": "m", "n": 5, "t": f"{index:024d}", "c": 1795579130, "r": 1}


def _fits_metadata(metadata: dict[str, str]) -> bool:
    return len(metadata) <= MAX_PAIRS and all(len(k) <= 64 and len(v) <= MAX_VALUE_LENGTH
                                              for k, v in metadata.items())


def test_ten_thousand_sessions_fit_and_every_one_is_found_in_its_page():
    rng = random.Random(7)
    root, pages = Root("thread_root"), [Page(f"thread_{0:024d}")]
    root.page_ids.append(pages[0].thread_id)
    ids = [f"session-{rng.getrandbits(48):x}-{index}" for index in range(10_000)]
    made = iter(range(1, 10**6))
    for index, session_id in enumerate(ids):
        put(root, pages, session_id, _record(index), lambda: Page(f"thread_{next(made):024d}"))
    assert sum(len(p.sessions) for p in pages) == 10_000
    assert all(p.chars() == len(p.encoded_sessions()) for p in pages)  # the running sizes are exact
    for session_id in ids:  # a lookup reads the root, then exactly one page
        assert session_id in pages[root.bucket(session_id)].sessions
    assert _fits_metadata(root.to_metadata()) and all(_fits_metadata(p.to_metadata()) for p in pages)
    assert len(pages) == 256


def test_round_trip_through_metadata():
    root = Root("thread_r", ["thread_a", "thread_b", "thread_c"], hwm="msg_1")
    assert Root.from_metadata("thread_r", root.to_metadata()) == root
    page = Page("thread_a", {"s1": _record(1), "s2": _record(2)}, applied="msg_9")
    assert Page.from_metadata("thread_a", page.to_metadata()) == page


def test_the_root_refuses_to_grow_past_its_keys():
    root = Root("thread_r", [f"thread_{0:024d}"])
    pages = [Page(root.page_ids[0])]
    made = iter(range(1, 10**6))
    while root.can_double():
        pages = double(root, pages, lambda: Page(f"thread_{next(made):024d}"))
    assert len(root.page_ids) == 256 and _fits_metadata(root.to_metadata())
    with pytest.raises(RegistryFull):
        double(root, pages, lambda: Page(f"thread_{next(made):024d}"))
