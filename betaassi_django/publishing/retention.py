"""Retention: removing the publish-queue events that the processor and every registered consumer have passed.

A publish thread grows by one message per event; nothing else ever removes one. ``prune`` deletes the
oldest events that everyone reading the queue is done with, keeping:

- the event at the registry root's high water mark and everything after it (the processor lists after it),
- each registered consumer's position and everything after it (a consumer lists ``after=<its position>``;
  a position that is gone would make that listing fail), including the mirror followers of the other
  deployments sharing the backend (they are consumers too),
- the newest ``keep`` events, whatever the positions (for the admin and for a consumer registered later).

A consumer whose position is empty (it starts from the oldest event) or names an event that is already gone
keeps the whole queue until it moves. Positions only ever move forward, so they are read before the events
are listed: a position read early protects more, never less. docs/configuration.md, BETAASSI_QUEUE_KEEP.
"""

from __future__ import annotations

import contextlib
import logging
import time

import openai

from betaassi_django import conf

from . import directory
from .backend import publish_thread, queue_ids
from .models import PublishedEvent
from .positions import root_hwm

logger = logging.getLogger("betaassi_django.publishing")

#: A ``StreamThread``'s metadata key for its consumer's position (the model field ``hwm``).
POSITION_KEY = "hwm"

#: Assistant id -> when this process last pruned its queue (``time.monotonic``), for ``maybe_prune``.
_last_pruned: dict[str, float] = {}


def positions(api: openai.OpenAI, assistant) -> dict[str, str]:
    """Who reads the queue and where they are: ``{"": root hwm, consumer name: its position}`` ("" = none yet).
    A directory entry whose thread is gone holds nothing back (logged)."""
    publish_id, root_id = queue_ids(assistant)
    found = {"": root_hwm(api, root_id)}
    for name, thread_id in sorted(directory.read(api, publish_id).items()):
        try:
            found[name] = (api.beta.threads.retrieve(thread_id).metadata or {}).get(POSITION_KEY, "")
        except openai.NotFoundError:
            logger.warning("assistant %s: consumer %s's position thread %s is gone; it holds nothing back",
                           assistant.id, name, thread_id)
    return found


def removable(event_ids: list[str], held: dict[str, str], keep: int) -> list[str]:
    """The oldest events before every position in ``held`` and outside the newest ``keep`` (in queue order)."""
    index = {event_id: i for i, event_id in enumerate(event_ids)}
    # An empty position or one already gone reads from the oldest retained event: it keeps everything.
    cut = min((index.get(position, 0) if position else 0 for position in held.values()), default=0)
    return event_ids[:max(0, min(cut, len(event_ids) - keep))]


def prune(api: openai.OpenAI, assistant, *, keep: int, dry_run: bool = False) -> int:
    """Delete the events everyone has passed (beyond the newest ``keep``) and their local ``PublishedEvent``
    rows; the number removed (with ``dry_run``: that would be removed, nothing deleted)."""
    if keep < 0:
        raise ValueError(f"keep={keep} must not be negative")
    held = positions(api, assistant)
    publish_id, _ = queue_ids(assistant)
    event_ids = [message.id for message in publish_thread(api, publish_id)]
    doomed = removable(event_ids, held, keep)
    if dry_run or not doomed:
        return len(doomed)
    for event_id in doomed:
        with contextlib.suppress(openai.NotFoundError):  # another pruner was first
            api.beta.threads.messages.delete(event_id, thread_id=publish_id)
    PublishedEvent.objects.filter(assistant_id=assistant.id, event_id__in=doomed).delete()
    logger.info("assistant %s: pruned %d event(s) of its publish queue, %d kept", assistant.id, len(doomed),
                len(event_ids) - len(doomed))
    return len(doomed)


def maybe_prune(api: openai.OpenAI, assistant) -> int:
    """``prune`` with ``BETAASSI_QUEUE_KEEP`` when ``BETAASSI_QUEUE_PRUNE_SECONDS`` passed since this process
    last pruned that assistant's queue (0: never); 0 when not due."""
    settings = conf.get()
    if not settings.queue_prune_seconds:
        return 0
    now = time.monotonic()
    last = _last_pruned.get(assistant.id)
    if last is not None and now - last < settings.queue_prune_seconds:
        return 0
    _last_pruned[assistant.id] = now
    return prune(api, assistant, keep=settings.queue_keep)
