"""The session kinds and their one argument: one home for the rule that forms, the admin, the events and the
processor all apply.

A session sees its whole history (``default``), the last message only (``oneshot``), or the last N messages
(``manyshots``, where N is ``context_messages``, required there and refused elsewhere). The registry stores a kind
as a one-letter code.
"""

from __future__ import annotations

#: The kinds, with the words the forms show.
CHOICES = [("default", "full history"), ("oneshot", "one-shot (last message only)"), ("manyshots", "last N messages")]
KINDS = tuple(kind for kind, _ in CHOICES)
#: A kind's code in a registry record, and back.
CODES = {"default": "d", "oneshot": "o", "manyshots": "m"}
BY_CODE = {code: kind for kind, code in CODES.items()}
#: The largest N of ``manyshots``.
MAX_CONTEXT_MESSAGES = 1000
#: What a form says when 'last N messages' comes without N.
ASK_FOR_COUNT = "Say how many messages 'last N messages' keeps."


def kept_context(kind: str | None, count: int | None) -> int | None:
    """The N a form keeps: its value for ``manyshots``, None for the other kinds (which have no N)."""
    return count if kind == "manyshots" else None


def context_refusal(kind: str | None, count: int | None) -> str | None:
    """Why ``count`` cannot be the N of a session of this kind, or None when it can."""
    if kind == "manyshots" and not count:
        return "context_messages (N >= 1) is required for kind 'manyshots'"
    if kind != "manyshots" and count is not None:
        return f"context_messages applies only to kind 'manyshots', not {kind!r}"
    return None


def truncation_strategy(kind: str, count: int | None) -> dict:
    """What a run shows the model: everything, the last message, or the last N."""
    if kind == "oneshot":
        return {"type": "last_messages", "last_messages": 1}
    if kind == "manyshots":
        return {"type": "last_messages", "last_messages": count}
    return {"type": "auto"}
