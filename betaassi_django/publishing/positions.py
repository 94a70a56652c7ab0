"""Where a durable consumer's position lives: its ``StreamThread``, and registering it on a queue.

A consumer's name is registered on an assistant's queue by publishing ``consumer.register`` with a new position
thread; the processor that owns the queue writes it into the directory on the publish thread (``registrations``),
and the registering process waits by reading that directory, so it works whichever deployment applies it. Two
processes registering one name at once: the first thread applied wins, the other is deleted.
"""

from __future__ import annotations

import time
from typing import Any

import openai

from . import directory, publisher
from .backend import publish_thread, queue_ids
from .events import Event, check_consumer_name

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


def registered(api: openai.OpenAI, assistant, name: str, position, timeout: float) -> str:
    """Publish ``consumer.register`` with a new position thread and wait until the directory names a thread:
    this one, or another process's (then this one is deleted). Works whichever deployment applies it."""
    publish_id, _ = queue_ids(assistant)
    known = directory.read(api, publish_id).get(name)
    if known:
        return known
    thread = model()(consumer=name, assistant_id=assistant.id, hwm=position())
    thread.save()
    event_id = publisher.publish(assistant, Event("consumer.register", None, {"name": name, "thread_id": thread.id}))
    deadline = time.monotonic() + timeout
    while True:
        known = directory.read(api, publish_id).get(name)
        if known:
            if known != thread.id:
                thread.delete()  # another process registered it first: its thread keeps the position
            return known
        verdict = api.beta.threads.messages.retrieve(event_id, thread_id=publish_id).metadata or {}
        if verdict.get("betaassi_status") in ("rejected", "noop") or time.monotonic() > deadline:
            thread.delete()  # never named (a late registration finds no thread and is rejected)
            if verdict.get("betaassi_status"):
                raise ValueError(f"consumer {name} was not registered on {assistant.id}: "
                                 f"{verdict.get('betaassi_reason', '')}")
            raise TimeoutError(f"consumer {name} was not registered on {assistant.id} within {timeout}s; "
                               "is process_publish_queue running for it?")
        time.sleep(REGISTER_POLL)


