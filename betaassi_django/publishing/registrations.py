"""The processor's writes besides the registry: the consumer directory, and the verdicts on event messages.

Both happen before the root write of their batch, so a replay after a crash does them again with the same
result (docs/events.md, "Consumer registrations" and "Outcomes on the message").
"""

from __future__ import annotations

import contextlib
import logging

import openai

from betaassi_django.metadata import TYPE_KEY

from . import directory
from .apply import Outcome
from .backend import delete_threads
from .events import Event

logger = logging.getLogger("betaassi_django.publishing")

#: The ``betaassi_type`` of a consumer's position thread (``betaassi_django.models.StreamThread``).
STREAM_TYPE = "betaassi_django.StreamThread"
#: The message metadata keys of a verdict.
VERDICT_KEYS = ("betaassi_event", "betaassi_status", "betaassi_reason")
_, STATUS_KEY, REASON_KEY = VERDICT_KEYS


def apply(api: openai.OpenAI, assistant_id: str, publish_id: str, events: list[tuple[Outcome, Event]]) -> None:
    """consumer.register / consumer.unregister, in order, on the consumer directory (one read and at most one
    write of the publish thread); sets each outcome. An unregistered consumer's thread is deleted, if tagged so."""
    if not events:
        return
    current = dict(api.beta.threads.retrieve(publish_id).metadata or {})
    updated, released = dict(current), []
    for outcome, event in events:
        name = event.args["name"]
        registered = directory.consumers(updated).get(name)
        if event.op == "consumer.unregister":
            if registered is None:
                outcome.status, outcome.reason = "noop", f"consumer {name!r} is not registered"
            else:
                updated = directory.without_consumer(updated, name)
                released.append((registered, name))
            continue
        thread_id = event.args["thread_id"]
        if registered == thread_id:
            continue  # registered by this event before an interrupted commit: applied again, no change
        if registered is not None:
            outcome.status, outcome.reason = "noop", f"registered with {registered}"
            continue
        refusal = stream_refusal(api, assistant_id, name, thread_id)
        if refusal:
            outcome.status, outcome.reason = "rejected", refusal
            continue
        try:
            updated = directory.with_consumer(updated, name, thread_id)
        except ValueError as exc:
            outcome.status, outcome.reason = "rejected", str(exc)
    if updated != current:
        api.beta.threads.update(publish_id, metadata=updated)
    for thread_id, name in released:
        if stream_refusal(api, assistant_id, name, thread_id) is None:
            delete_threads(api, [thread_id])
        else:
            logger.warning("assistant %s: not deleting %s (not the position thread of consumer %r)",
                           assistant_id, thread_id, name)


def stream_refusal(api: openai.OpenAI, assistant_id: str, name: str, thread_id: str) -> str | None:
    """Why ``thread_id`` is not the position thread of consumer ``name`` on this assistant (None: it is)."""
    try:
        metadata = api.beta.threads.retrieve(thread_id).metadata or {}
    except (openai.NotFoundError, openai.BadRequestError):
        return f"thread {thread_id} does not exist"
    if metadata.get(TYPE_KEY) != STREAM_TYPE:
        return f"thread {thread_id} is not a {STREAM_TYPE}"
    if metadata.get("consumer") != name:
        return f"thread {thread_id} keeps the position of another consumer, not {name!r}"
    if metadata.get("assistant_id") != assistant_id:
        return f"thread {thread_id} follows another assistant's queue"
    return None


def write_verdicts(api: openai.OpenAI, publish_id: str, outcomes: list[Outcome], carried: set[str]) -> None:
    """Each noop or rejected outcome onto its event's message: an event at or before the root's hwm without a
    verdict was applied (app.event: passed). ``carried``: the messages that came with verdict keys of their own
    (a publisher may write any metadata): an applied one loses them, so nobody reads a forged verdict."""
    for outcome in outcomes:
        if outcome.status in ("noop", "rejected"):
            values = (outcome.op or "", outcome.status, (outcome.reason or "")[:512])
            metadata = dict(zip(VERDICT_KEYS, values, strict=True))
        elif outcome.event_id in carried:
            metadata = {VERDICT_KEYS[0]: outcome.op or ""}
        else:
            continue
        with contextlib.suppress(openai.NotFoundError):  # removed meanwhile: nobody can read it any more
            api.beta.threads.messages.update(outcome.event_id, thread_id=publish_id, metadata=metadata)


def carries_verdict(message) -> bool:
    """Whether a publish-thread message came with verdict keys (only the processor may write them)."""
    return any(key in (message.metadata or {}) for key in VERDICT_KEYS[1:])
