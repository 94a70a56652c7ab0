"""The text of a message as the openai SDK returns it: one home for every app-side reader.

A low floor (it imports nothing of the app): the publish queue reads events from message text, the turns
send and collect replies, and the mirrored ``Message`` model stores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def text_of(message: Any, separator: str = "") -> str:
    """The text parts of an SDK ``Message`` joined by ``separator``: "" where the text is data (publish-queue
    events, replies), "\\n" for the mirrored ``Message.content`` (parts read as paragraphs)."""
    return separator.join(part.text.value for part in message.content if part.type == "text")


def text_of_all(messages: Iterable[Any]) -> str:
    """The text of several messages as one reply (each message's parts and the messages joined with "")."""
    return "".join(text_of(message) for message in messages)
