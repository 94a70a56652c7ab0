"""Where a durable consumer's position lives: its ``StreamThread``, and registering it on a queue.

A consumer's name is registered on an assistant's queue by publishing ``consumer.register`` with a new position
thread; the processor that owns the queue writes it into the directory on the publish thread (``registrations``),
and the registering process waits by reading that directory, so it works whichever deployment applies it. Two
processes registering one name at once: the first thread applied wins, the other is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai

from . import directory, publisher
from .backend import publish_thread, queue_ids
from .events import Event, check_consumer_name
from .registrations import REASON_KEY, STATUS_KEY

#: Consumer names the app keeps for its own consumers (a deployment's mirror follower).
RESERVED_PREFIX = "betaassi."
STARTS = ("oldest", "latest")
#: Seconds between two reads of the directory while a registration waits for the processor.
REGISTER_POLL = 0.05

_stream_model: Any = None


def use_stream_model(stream_model) -> None:
    """The model that keeps positions (``betaassi_django.models.StreamThread``); the app's ``ready()`` sets it."""
    global _stream_model
    _stream_model = stream_model


def model():
    if _stream_model is None:
        raise RuntimeError("betaassi_django is not ready: no StreamThread model (is the app installed?)")
    return _stream_model


def check_name(name: object, *, reserved_ok: bool = False) -> str:
    """A consumer's name, or ``ValueError`` saying what is wrong with it."""
    check_consumer_name(name)  # the rule the processor applies to consumer.register (a ValueError)
    if name.startswith(RESERVED_PREFIX) and not reserved_ok:
        raise ValueError(f"consumer names starting {RESERVED_PREFIX!r} are reserved for the app's own consumers")
    return name


def newest(api: openai.OpenAI, publish_id: str) -> str:
    page = publish_thread(api, publish_id, order="desc", limit=1).data
    return page[0].id if page else ""


def root_hwm(api: openai.OpenAI, root_id: str) -> str:
    return (api.beta.threads.retrieve(root_id).metadata or {}).get("hwm", "")


def register(api: openai.OpenAI, assistant, name: str, *, start: str = "oldest", timeout: float = 10.0) -> str:
    """Register ``name`` on the assistant's queue (the processor applies it); the position thread's id."""
    check_name(name)
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}")
    publish_id, _ = queue_ids(assistant)
    return registered(api, assistant, name, lambda: newest(api, publish_id) if start == "latest" else "", timeout)


@dataclass(frozen=True)
class Registration:
    """A ``consumer.register`` this process published: the position thread it offers, and the event."""

    thread_id: str
    event_id: str


class Refused(ValueError):
    """The processor refused a registration (``noop`` or ``rejected``); the text is its reason."""


def begin(assistant, name: str, hwm: str) -> Registration:
    """Offer a new position thread (at ``hwm``) for ``name``: create it, publish ``consumer.register``."""
    thread = model()(consumer=name, assistant_id=assistant.id, hwm=hwm)
    thread.save()
    event_id = publisher.publish(assistant, Event("consumer.register", None, {"name": name, "thread_id": thread.id}))
    return Registration(thread.id, event_id)


def settle(api: openai.OpenAI, assistant, name: str, pending: Registration) -> str | None:
    """The thread the directory names for ``name`` once the owner applied the registration (the offered one, or
    another process's: then the offered one is deleted); None while it waits. ``Refused`` when refused (the
    offered thread deleted)."""
    publish_id, _ = queue_ids(assistant)
    known = directory.read(api, publish_id).get(name)
    if known:
        if known != pending.thread_id:
            discard(pending)  # another process registered it first: its thread keeps the position
        return known
    verdict = api.beta.threads.messages.retrieve(pending.event_id, thread_id=publish_id).metadata or {}
    if verdict.get(STATUS_KEY) in ("rejected", "noop"):
        discard(pending)  # never named (a late registration finds no thread and is rejected)
        raise Refused(verdict.get(REASON_KEY, ""))
    return None


def discard(pending: Registration) -> None:
    """Delete the offered position thread (in the backend and its mirror row)."""
    model().objects.filter(pk=pending.thread_id).delete()


def registered(api: openai.OpenAI, assistant, name: str, position, timeout: float) -> str:
    """The thread the directory names for ``name``, registering it first (with a position thread at ``position()``)
    and waiting for the processor to apply it: works whichever deployment applies it."""
    publish_id, _ = queue_ids(assistant)
    known = directory.read(api, publish_id).get(name)
    if known:
        return known
    pending = begin(assistant, name, position())
    deadline = time.monotonic() + timeout
    while True:
        try:
            known = settle(api, assistant, name, pending)
        except Refused as exc:
            raise ValueError(f"consumer {name} was not registered on {assistant.id}: {exc}") from None
        if known:
            return known
        if time.monotonic() > deadline:
            discard(pending)
            raise TimeoutError(f"consumer {name} was not registered on {assistant.id} within {timeout}s; "
                               "is process_publish_queue running for it?")
        time.sleep(REGISTER_POLL)
