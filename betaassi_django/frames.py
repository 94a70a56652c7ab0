"""What the chat's frames carry: a message, a session, and a thread's history with its citations.

The shapes of the WebSocket contract (docs/websocket.md) in one place, shared by the consumer (``session.ready``,
``session.updated``) and a turn's frames (``turns``: ``message.created``, ``message.completed``).
"""

from __future__ import annotations

import openai

from betaassi_django.client import get_async_client
from betaassi_django.messages import citations, text_of

#: Messages of history sent with ``session.ready``.
HISTORY_MESSAGES = 50


def message_frame(message) -> dict:
    """A message as frames carry it."""
    return {"id": message.id, "role": message.role, "content": text_of(message),
            "created_at": message.created_at, "run_id": message.run_id}


def session_frame(session) -> dict:
    """A session as frames carry it (no owner details: the socket already knows its user)."""
    return {
        "assistant_id": session.assistant_id, "session_id": session.session_id, "kind": session.kind,
        "context_messages": session.context_messages, "model": session.model, "thread_id": session.thread_id,
        "created_at": int(session.created_at.timestamp()),
        "touched_at": int(session.touched_at.timestamp()) if session.touched_at else None,
    }


def settings_of(session) -> tuple:
    """What a ``session.updated`` frame tells a connection: the session's kind, N, model and thread."""
    return session.kind, session.context_messages, session.model, session.thread_id


async def history(thread_id: str, limit: int = HISTORY_MESSAGES) -> list[dict]:
    """The thread's last ``limit`` messages, oldest first."""
    api = get_async_client()
    page = await api.beta.threads.messages.list(thread_id, order="desc", limit=limit)
    return [await cited_frame(api, thread_id, m) for m in reversed(page.data)]


async def cited_frame(api: openai.AsyncOpenAI, thread_id: str, message) -> dict:
    """``message_frame``, with the reply's ``citations`` when it cites files (file_search: one request for them)."""
    frame = message_frame(message)
    cited = await citations(api, thread_id, message)
    return {**frame, "citations": cited} if cited else frame
