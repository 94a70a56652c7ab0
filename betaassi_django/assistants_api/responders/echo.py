"""The offline, deterministic responder."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from betaassi_django import conf

from .interface import Reply, ResponderRequest

_WORDS = re.compile(r"\S+\s*|\s+")


def _count_words(text: str) -> int:
    return len(text.split())


def _json_asked(response_format) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def echo_json(last_user: str, context: int) -> str:
    """Echo's reply when JSON is asked: valid JSON, deterministic. It does not fill an arbitrary json_schema: the
    same object answers both formats."""
    return json.dumps({"echo": last_user, "context": context}, ensure_ascii=False)


class EchoResponder:
    """``echo: <last user text> [context=<N>]``.

    N is the number of thread messages given after truncation. The reply is
    streamed a word at a time (at least three deltas), with an optional pause
    between deltas (``BETAASSI_ECHO_DELAY`` seconds) so streaming can be seen.

    Echo's tokens are words: its prompt tokens are the words of the instructions and messages it was given, each
    delta is one completion token. With ``response_format`` ``json_object`` or ``json_schema`` the reply is
    ``{"echo": "<last user text>", "context": N}`` (``echo_json``), streamed the same way; with a
    ``max_completion_tokens`` budget it stops after that many deltas, and the run ends ``incomplete``.
    """

    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str]:
        messages = request.thread_messages
        last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
        text = f"echo: {last_user} [context={len(messages)}]"
        if _json_asked(request.response_format):
            text = echo_json(last_user, len(messages))
        budget = request.max_completion_tokens
        reply.prompt_tokens = _count_words(request.instructions) + sum(_count_words(m.text) for m in messages)
        delay = conf.get().echo_delay
        for index, piece in enumerate(_WORDS.findall(text)):
            if budget is not None and index >= budget:
                reply.incomplete = "max_completion_tokens"
                return
            if delay and index:
                await asyncio.sleep(delay)
            reply.completion_tokens += 1
            yield piece
