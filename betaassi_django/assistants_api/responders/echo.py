"""The offline, deterministic responder."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator

from betaassi_django import conf

from .interface import Reply, ResponderRequest, ToolCall, ToolRound

_WORDS = re.compile(r"\S+\s*|\s+")


def _count_words(text: str) -> int:
    return len(text.split())


def _json_asked(response_format) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def echo_json(last_user: str, context: int) -> str:
    """Echo's reply when JSON is asked: valid JSON, deterministic. It does not fill an arbitrary json_schema: the
    same object answers both formats."""
    return json.dumps({"echo": last_user, "context": context}, ensure_ascii=False)


def _citation(request: ResponderRequest) -> str | None:
    """The best result's citation marker from the run's last file_search output (``[no results]`` when it found
    nothing); None before any search."""
    for entry in reversed(request.messages):
        if isinstance(entry, ToolRound):
            for call in entry.calls:
                if call.name == "file_search":
                    results = json.loads(call.output or "{}").get("results") or []
                    return results[0]["citation"] if results else "[no results]"
    return None


class EchoResponder:
    """``echo: <last user text> [context=<N>]``.

    N is the number of thread messages given after truncation. The reply is
    streamed a word at a time (at least three deltas), with an optional pause
    between deltas (``BETAASSI_ECHO_DELAY`` seconds) so streaming can be seen.

    Echo's tokens are words: its prompt tokens are the words of the instructions and messages it was given, each
    delta is one completion token. With ``response_format`` ``json_object`` or ``json_schema`` the reply is
    ``{"echo": "<last user text>", "context": N}`` (``echo_json``), streamed the same way; with a
    ``max_completion_tokens`` budget it stops after that many deltas, and the run ends ``incomplete``.

    With file_search (the run offers the search: ``request.search``) echo first calls it with
    ``{"query": "<last user text>"}``, then replies ``echo: <last user text> [context=<N>] <citation>``, the
    citation being the best result's marker (``【0:0†<file name>】``, which the run annotates) or ``[no results]``.
    """

    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str]:
        messages = request.thread_messages
        last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
        text = f"echo: {last_user} [context={len(messages)}]"
        if _json_asked(request.response_format):
            text = echo_json(last_user, len(messages))
        budget = request.max_completion_tokens
        reply.prompt_tokens = _count_words(request.instructions) + sum(_count_words(m.text) for m in messages)
        if request.search:
            cited = _citation(request)
            if cited is None:
                reply.completion_tokens += 1
                yield ToolCall("call_" + secrets.token_hex(12), "file_search",
                               json.dumps({"query": last_user}, ensure_ascii=False))
                return
            if not _json_asked(request.response_format):
                text = f"{text} {cited}"
        delay = conf.get().echo_delay
        for index, piece in enumerate(_WORDS.findall(text)):
            if budget is not None and index >= budget:
                reply.incomplete = "max_completion_tokens"
                return
            if delay and index:
                await asyncio.sleep(delay)
            reply.completion_tokens += 1
            yield piece
