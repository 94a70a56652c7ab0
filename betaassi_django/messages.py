"""The text of a message as the openai SDK returns it: one home for every app-side reader.

A low floor (it imports nothing of the app): the publish queue reads events from message text, the turns
send and collect replies (and a reply's file citations: ``citations``), and the mirrored ``Message`` model stores
it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def text_of(message: Any, separator: str = "") -> str:
    """The text parts of an SDK ``Message`` joined by ``separator``: "" where the text is data (publish-queue
    events, replies), "\\n" for the mirrored ``Message.content`` (parts read as paragraphs)."""
    return separator.join(part.text.value for part in message.content if part.type == "text")


def text_of_all(messages: Iterable[Any]) -> str:
    """The text of several messages as one reply (each message's parts and the messages joined with "")."""
    return "".join(text_of(message) for message in messages)


#: The include[] value that gives file_search results their content (the excerpts a reply cites).
SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
#: A citation marker as the embedded API writes them: 【<search>:<result>†<file name>】 (docs/knowledge.md).
_MARKER = re.compile(r"【(\d+):(\d+)†([^】\n]*)】")
#: A citation's quote keeps at most this many characters of the excerpt.
QUOTE_CHARS = 300


def file_citations(message: Any) -> list[Any]:
    """The ``file_citation`` annotations of an SDK ``Message``'s text parts, in order."""
    return [note for part in message.content if part.type == "text" for note in part.text.annotations
            if note.type == "file_citation"]


async def citations(api: Any, thread_id: str, message: Any) -> list[dict]:
    """A reply's citations, each ``{"file_id", "file_name", "text", "quote"}`` (``text``: the marker in the reply;
    ``quote``: the start of the excerpt cited), read from its run's file_search steps; ``[]`` (and no request)
    when it cites nothing. A marker repeated is listed once. ``api``: the async SDK client."""
    notes = file_citations(message)
    if not notes or not message.run_id:
        return []
    steps = await api.beta.threads.runs.steps.list(message.run_id, thread_id=thread_id, order="asc", limit=100,
                                                   include=[SEARCH_CONTENT])
    searches = [call.file_search.results or [] for step in steps.data if step.step_details.type == "tool_calls"
                for call in step.step_details.tool_calls if call.type == "file_search"]
    found, seen = [], set()
    for note in notes:
        if note.text in seen:
            continue
        seen.add(note.text)
        match = _MARKER.fullmatch(note.text)
        search, index = (int(match[1]), int(match[2])) if match else (-1, -1)
        result = searches[search][index] if 0 <= search < len(searches) and index < len(searches[search]) else None
        quote = " ".join((result.content[0].text if result and result.content else "").split())
        found.append({"file_id": note.file_citation.file_id,
                      "file_name": result.file_name if result else (match[3] if match else ""),
                      "text": note.text,
                      "quote": quote if len(quote) <= QUOTE_CHARS else quote[:QUOTE_CHARS - 1] + "…"})
    return found
