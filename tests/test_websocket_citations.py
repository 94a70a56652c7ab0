"""A reply that cites files (file_search, echo responder): its ``message.completed`` frame carries the citations
(docs/websocket.md), through the project's real ASGI stack."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from betaassi_django.client import get_client
from tests.test_websocket import _ready, _turn, support  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

HANDBOOK = ("The office opens at nine. Parking is behind the library, next to the bicycle racks; visitors sign in "
            "at the desk on the ground floor.\n")


def give_knowledge(assistant_id: str) -> str:
    """The assistant gets file_search and a store holding handbook.md (ingested); the file's id."""
    api = get_client()
    handbook = api.files.create(file=("handbook.md", HANDBOOK.encode(), "text/markdown"), purpose="assistants")
    assistant = api.beta.assistants.update(assistant_id, tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_stores": [{"file_ids": [handbook.id]}]}})
    store_id = assistant.tool_resources.file_search.vector_store_ids[0]
    deadline = time.monotonic() + 30
    while api.vector_stores.files.retrieve(handbook.id, vector_store_id=store_id).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return handbook.id


async def test_a_cited_reply_ends_with_its_citations(support, alice):  # noqa: F811
    file_id = await sync_to_async(give_knowledge)(support.id)
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "parking"})
    frames = await _turn(communicator)
    done = frames[-1]
    assert done["type"] == "message.completed"
    assert done["message"]["content"] == "echo: parking [context=1] 【0:0†handbook.md】"
    cited = [{"file_id": file_id, "file_name": "handbook.md", "text": "【0:0†handbook.md】",
              "quote": HANDBOOK.strip()}]
    assert done["message"]["citations"] == cited
    # A reply citing nothing has no citations field (the message as before).
    await communicator.send_json_to({"type": "user.message", "content": "zebra"})
    frames = await _turn(communicator)
    assert frames[-1]["message"]["content"] == "echo: zebra [context=3] [no results]"
    assert "citations" not in frames[-1]["message"]
    await communicator.disconnect()
    # The history of a new connection has the same citations.
    communicator, ready = await _ready(support, alice)
    assert [m.get("citations") for m in ready["history"]] == [None, cited, None, None]
    assert ready["history"][1] == done["message"]
    await communicator.disconnect()
