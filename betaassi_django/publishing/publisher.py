"""Appending events to an assistant's publish thread, and waiting for what the processor recorded of one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from django.core.exceptions import ValidationError
from django.db import transaction

from betaassi_django.client import get_client

from . import notify
from .backend import add_message, queue_ids
from .events import Event, Rejected
from .models import PublishedEvent

#: The arguments a rejection may name first (its field in a ``ValidationError``).
FIELDS = ("session_id", "owner", "kind", "context_messages", "model", "type", "data", "name")
#: Seconds between two reads of the event log while waiting.
POLL_INTERVAL = 0.01


def invalid(exc: Rejected) -> ValidationError:
    """A rejection as a ValidationError naming the field its message starts with."""
    message = str(exc)
    name = next((f for f in FIELDS if message.startswith(f)), "__all__")
    return ValidationError({name: message})


def publish(assistant, event: Event) -> str:
    """Append one event to the assistant's publish thread; its message id is the event id."""
    publish_id, _ = queue_ids(assistant)
    event_id = add_message(get_client(), publish_id, event.to_json(), {"betaassi_event": event.op})
    # Inside a transaction (an admin form, ATOMIC_REQUESTS) the in-process event is visible once it commits.
    transaction.on_commit(lambda: notify.wake(assistant.id))
    return event_id


# -- waiting for an event's outcome: one loop, sync and async ----------------------------------------------


def _until(timeout: float) -> Iterator[None]:
    """One step per read of the event log, until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield


def _recorded(event_id: str):
    return PublishedEvent.objects.filter(event_id=event_id)


def _not_processed(event_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"event {event_id} was not processed within {timeout}s; is process_publish_queue running?")


def wait(event_id: str, timeout: float = 10.0) -> PublishedEvent:
    """Block until a processor recorded this event; returns the record (``status``: applied, noop, rejected;
    ``reason``). ``TimeoutError`` after ``timeout`` seconds."""
    for _ in _until(timeout):
        found = _recorded(event_id).first()
        if found is not None:
            return found
        time.sleep(POLL_INTERVAL)
    raise _not_processed(event_id, timeout)


async def await_(event_id: str, timeout: float = 10.0) -> PublishedEvent:
    """``wait`` without blocking the event loop (a view or a consumer holds no worker thread meanwhile)."""
    for _ in _until(timeout):
        found = await _recorded(event_id).afirst()
        if found is not None:
            return found
        await asyncio.sleep(POLL_INTERVAL)
    raise _not_processed(event_id, timeout)
