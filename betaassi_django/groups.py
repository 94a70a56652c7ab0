"""The channel-layer group names: one home for the names that senders and listeners must agree on.

A low floor (it imports nothing of the app), so the publish queue's broadcasts, the session turns, the
account re-checks and the WebSocket consumer all name the same groups without importing each other.
"""

from __future__ import annotations

import hashlib


def assistant_group(assistant_id: str) -> str:
    """Where the publish queue announces an assistant's applied events (``publish.applied``)."""
    return f"betaassi.assistant.{assistant_id}"


def session_group(assistant_id: str, session_id: str) -> str:
    """Where a session's turn frames go. Group names allow only ``[A-Za-z0-9._-]``; session ids may hold ``:``,
    so they are hashed."""
    return f"betaassi.session.{assistant_id}.{hashlib.sha256(session_id.encode()).hexdigest()[:32]}"


def user_group(user_pk) -> str:
    """Where a user's open connections hear that their account changed (``account.changed``)."""
    return f"betaassi.user.{user_pk}"
