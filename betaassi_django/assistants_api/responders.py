"""Responders produce the assistant's reply for a run, as a stream of text deltas."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured

from betaassi_django import conf


@dataclass(frozen=True)
class ContextMessage:
    role: str
    text: str


@dataclass(frozen=True)
class ResponderRequest:
    """What a responder is given: the run's settings and the truncated thread."""

    model: str
    instructions: str
    messages: list[ContextMessage]
    temperature: float | None = None
    top_p: float | None = None
    tools: list = field(default_factory=list)


@dataclass
class Reply:
    """Filled in by a responder as it streams."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Responder(Protocol):
    def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str]: ...


_WORDS = re.compile(r"\S+\s*|\s+")


def _count_words(text: str) -> int:
    return len(text.split())


class EchoResponder:
    """Offline and deterministic: ``echo: <last user text> [context=<N>]``.

    N is the number of thread messages given after truncation. The reply is
    streamed a word at a time (at least three deltas), with an optional pause
    between deltas (``BETAASSI_ECHO_DELAY`` seconds) so streaming can be seen.
    """

    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str]:
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        text = f"echo: {last_user} [context={len(request.messages)}]"
        reply.prompt_tokens = _count_words(request.instructions) + sum(_count_words(m.text) for m in request.messages)
        delay = conf.get().echo_delay
        for index, piece in enumerate(_WORDS.findall(text)):
            if delay and index:
                await asyncio.sleep(delay)
            reply.completion_tokens += 1
            yield piece


def get_responder() -> Responder:
    name = conf.get().responder
    if name == "echo":
        return EchoResponder()
    raise ImproperlyConfigured(f"BETAASSI_RESPONDER={name!r} is not available in this release; use 'echo'.")
