"""The consumer directory: which thread keeps each named consumer's position on an assistant's queue.

It lives in the publish thread's metadata, one key per consumer (``consumer:<name>`` -> the ``StreamThread``'s
id), so every process and deployment sharing the backend finds the same position. Only the processor that
holds the assistant's lease writes it, applying ``consumer.register`` / ``consumer.unregister`` events in
order, so two registrations never race (docs/events.md).
"""

from __future__ import annotations

import openai

from betaassi_django.metadata import CONSUMER_KEY_PREFIX, MAX_PAIRS

#: The publish thread's own ``betaassi_type`` takes one key; the rest are for consumers.
MAX_CONSUMERS = MAX_PAIRS - 1


def consumers(metadata: dict[str, str] | None) -> dict[str, str]:
    """Consumer name -> its position thread's id, from a publish thread's metadata."""
    return {key[len(CONSUMER_KEY_PREFIX):]: value for key, value in (metadata or {}).items()
            if key.startswith(CONSUMER_KEY_PREFIX)}


def read(api: openai.OpenAI, publish_id: str) -> dict[str, str]:
    """The registered consumers of the queue whose publish thread is ``publish_id`` (one read)."""
    return consumers(api.beta.threads.retrieve(publish_id).metadata)


def with_consumer(metadata: dict[str, str], name: str, thread_id: str) -> dict[str, str]:
    """The publish thread's metadata with ``name`` registered (``ValueError`` when the directory is full)."""
    if name not in consumers(metadata) and len(consumers(metadata)) >= MAX_CONSUMERS:
        raise ValueError(f"the queue already has {MAX_CONSUMERS} consumers, the most it can hold")
    return {**metadata, CONSUMER_KEY_PREFIX + name: thread_id}


def without_consumer(metadata: dict[str, str], name: str) -> dict[str, str]:
    """The publish thread's metadata with ``name`` unregistered."""
    return {k: v for k, v in metadata.items() if k != CONSUMER_KEY_PREFIX + name}
