"""Issue 2: message create + list through the SDK (in-process, HTTP) against the ORM floor."""

from __future__ import annotations

import itertools

import openai
from django.db import transaction

from betaassi_django.assistants_api import serializers
from betaassi_django.assistants_api.models import ACTIVE_RUN_STATUSES, Message, Run, Thread

from .report import Timing, add_timing, verdict

NAME = "message create+list"


def orm_floor(thread_id: str) -> None:
    """The database work the store does for one create and one list, through the ORM directly."""
    with transaction.atomic():
        thread = Thread.objects.get(id=thread_id)
        list(Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).only("id", "status", "expires_at"))
        message = Message(thread=thread, role="user", status="completed", attachments=[], metadata={},
                          content=[{"type": "text", "text": {"value": "hello", "annotations": []}}])
        message.save()
    serializers.message(message, thread_id)
    thread = Thread.objects.get(id=thread_id)
    [serializers.message(m, thread_id) for m in Message.objects.filter(thread=thread).order_by("-seq")[:21]]


def sdk_op(client: openai.OpenAI, thread_id: str) -> None:
    client.beta.threads.messages.create(thread_id, role="user", content="hello")
    client.beta.threads.messages.list(thread_id, limit=20)


def side_by_side(ops: dict, n: int) -> dict[str, Timing]:
    """Time each op n times, alternating their order, after a warm-up."""
    timings = {name: Timing() for name in ops}
    for op in ops.values():
        for _ in range(10):
            op()
    order = itertools.cycle([list(ops), list(reversed(ops))])
    for _ in range(n):
        for name in next(order):
            timings[name].measure(ops[name])
    return timings


def run(in_process: openai.OpenAI, http: openai.OpenAI, n: int) -> None:
    """Two side-by-side runs: in-process against the ORM floor, then HTTP against in-process.

    Each ratio is measured against its own baseline in the same loop; the HTTP
    server is a second process on this 2-core machine, so it is kept out of
    the first comparison.
    """
    floor_thread, local_thread, remote_thread = (Thread.objects.create().id, in_process.beta.threads.create().id,
                                                 http.beta.threads.create().id)
    first = side_by_side({"ORM floor": lambda: orm_floor(floor_thread),
                          "SDK in-process": lambda: sdk_op(in_process, local_thread)}, n)
    floor, local = first["ORM floor"], first["SDK in-process"]
    add_timing(NAME, "ORM floor", floor)
    ratio = local.p50_ms / floor.p50_ms
    add_timing(NAME, "SDK in-process", local, ratio, verdict(ratio, 2.0) + " (vs ORM floor, p50; issue 16)")
    second = side_by_side({"SDK in-process": lambda: sdk_op(in_process, local_thread),
                           "SDK over HTTP": lambda: sdk_op(http, remote_thread)}, n)
    local, remote = second["SDK in-process"], second["SDK over HTTP"]
    add_timing(NAME, "SDK in-process (beside HTTP)", local)
    add_timing(NAME, "SDK over HTTP", remote, remote.p50_ms / local.p50_ms, "report (vs in-process beside it, p50)")
