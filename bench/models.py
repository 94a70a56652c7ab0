"""Issue 3: backend calls per model operation, and save() against the raw SDK modify."""

from __future__ import annotations

import itertools
import math

import openai

from betaassi_django.client import get_client
from tests.testapp.models import Kitchen, Support

from .report import Timing, add, add_timing, verdict

NAME = "model write-through"


def count_calls(recorder: list, func) -> list[tuple[str, str]]:
    recorder.clear()
    func()
    return list(recorder)


def run(recorder: list, n: int, listed: int) -> None:
    support = Support.objects.create(name="bench", tier=1)
    calls = count_calls(recorder, lambda: (setattr(support, "tier", 2), support.save()))
    add(NAME, "save() of an existing object", f"{len(calls)} call(s): {' '.join(m for m, _ in calls)}", "",
        f"exactly 1 modify: {'met' if [m for m, _ in calls] == ['POST'] else 'MISSED'}")
    calls = count_calls(recorder, lambda: Support.retrieve(support.id))
    add(NAME, "retrieve(id)", f"{len(calls)} call(s)", "", f"exactly 1: {'met' if len(calls) == 1 else 'MISSED'}")

    for index in range(listed - 1):  # with ``support``: `listed` assistants, half of each type
        if index % 2:
            Support.objects.create(tier=index)
        else:
            Kitchen.objects.create()
    expected = math.ceil(listed / 100)
    calls = count_calls(recorder, Support.list_remote)
    add(NAME, f"list_remote() over {listed} assistants", f"{len(calls)} call(s)", "",
        f"ceil(N/100) = {expected}: {'met' if len(calls) == expected else 'MISSED'}")

    time_save("embedded, in-process", support, get_client(), n)


def time_save(backend: str, support: Support, raw: openai.OpenAI, n: int) -> None:
    """save() against the raw SDK update it makes, interleaved, on the same object.

    save() sends only what changed since the object was read (here its metadata, for ``tier``); the raw call
    sends the same body, so the ratio is what the model layer adds: validation, encoding, the mirror row."""
    values = itertools.count(3)
    save, modify = Timing(), Timing()

    def by_model() -> None:
        support.tier = next(values)
        support.save()

    def by_sdk() -> None:  # the call save() makes when only ``tier`` changed: the whole metadata, nothing else
        raw.beta.assistants.update(support.id, metadata={**support.metadata, "tier": str(next(values))})

    for _ in range(10):
        by_model(), by_sdk()
    for index in range(n):
        pair = (by_model, by_sdk) if index % 2 else (by_sdk, by_model)
        for func in pair:
            (save if func is by_model else modify).measure(func)
    add_timing(NAME, f"raw SDK update ({backend})", modify)
    ratio = save.p50_ms / modify.p50_ms
    add_timing(NAME, f"save() ({backend})", save, ratio, verdict(ratio, 1.2) + " (vs raw SDK, p50)")


def run_remote(server, n: int) -> None:
    """The same comparison with the remote backend: the models talk HTTP to a daphne server."""
    from django.test import override_settings

    from betaassi_django.client import build_client, use_clients

    with override_settings(BETAASSI_BACKEND="remote", OPENAI_BASE_URL=server.base_url,
                           OPENAI_API_KEY=server.api_key):
        client = build_client(max_retries=0)
        with use_clients(client):
            support = Support.objects.create(name="bench", tier=1)
            time_save("remote, HTTP", support, client, n)
