"""The offline, deterministic responder."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from betaassi_django import conf

from .interface import Reply, ResponderRequest

_WORDS = re.compile(r"\S+\s*|\s+")


def _count_words(text: str) -> int:
    return len(text.split())


class EchoResponder:
    """``echo: <last user text> [context=<N>]``.

    N is the number of thread messages given after truncation. The reply is
    streamed a word at a time (at least three deltas), with an optional pause
    between deltas (``BETAASSI_ECHO_DELAY`` seconds) so streaming can be seen.
    """

    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str]:
        messages = request.thread_messages
        last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
        text = f"echo: {last_user} [context={len(messages)}]"
        reply.prompt_tokens = _count_words(request.instructions) + sum(_count_words(m.text) for m in messages)
        delay = conf.get().echo_delay
        for index, piece in enumerate(_WORDS.findall(text)):
            if delay and index:
                await asyncio.sleep(delay)
            reply.completion_tokens += 1
            yield piece
