"""Responders produce the assistant's reply for a run: text deltas, and function calls for the client.

- ``echo`` (default): offline and deterministic.
- ``openai``: a real model behind an OpenAI-compatible endpoint, through the
  Responses API (``BETAASSI_UPSTREAM_API=responses``) or Chat Completions (``chat``).
"""

from __future__ import annotations

from betaassi_django import conf

from .interface import Responder


def get_responder() -> Responder:
    """The configured responder (``BETAASSI_RESPONDER``, ``BETAASSI_UPSTREAM_API``), read at each run so a
    changed setting applies to the next one."""
    settings = conf.get()
    if settings.responder == "echo":
        from .echo import EchoResponder

        return EchoResponder()
    if settings.upstream_api == "chat":
        from .openai_chat import ChatCompletionsResponder

        return ChatCompletionsResponder()
    from .openai_responses import ResponsesResponder

    return ResponsesResponder()
