"""Assistants endpoints and the behaviours every list and metadata shares."""

from __future__ import annotations

import openai
import pytest


def test_create_retrieve_modify_delete(client):
    created = client.beta.assistants.create(
        model="gpt-4o",
        name="Helper",
        description="Helps.",
        instructions="Be brief.",
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        metadata={"team": "docs"},
        temperature=0.5,
        top_p=0.9,
    )
    assert created.id.startswith("asst_") and len(created.id) == len("asst_") + 24
    assert (created.object, created.name, created.description) == ("assistant", "Helper", "Helps.")
    assert (created.model, created.instructions, created.metadata) == ("gpt-4o", "Be brief.", {"team": "docs"})
    assert (created.temperature, created.top_p, created.response_format) == (0.5, 0.9, "auto")
    assert created.tools[0].function.name == "lookup"

    fetched = client.beta.assistants.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()

    changed = client.beta.assistants.update(created.id, name="Renamed", metadata={"team": "eng", "tier": "1"})
    assert (changed.name, changed.metadata, changed.instructions) == (
        "Renamed",
        {"team": "eng", "tier": "1"},
        "Be brief.",
    )
    assert client.beta.assistants.retrieve(created.id).name == "Renamed"

    deleted = client.beta.assistants.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "assistant.deleted", True)
    with pytest.raises(openai.NotFoundError) as info:
        client.beta.assistants.retrieve(created.id)
    assert info.value.body["message"] == f"No assistant found with id '{created.id}'."


def test_defaults(client):
    created = client.beta.assistants.create(model="m")
    assert (created.name, created.description, created.instructions) == (None, None, None)
    assert (created.tools, created.metadata, created.temperature, created.top_p) == ([], {}, 1.0, 1.0)


def test_model_is_required(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model=openai.omit)
    assert (info.value.param, info.value.code) == ("model", "missing_required_parameter")


@pytest.mark.parametrize(
    ("field", "value", "param", "code"),
    [
        ("name", "n" * 257, "name", "string_above_max_length"),
        ("temperature", 2.5, "temperature", "decimal_above_max_value"),
        ("top_p", -0.1, "top_p", "decimal_below_min_value"),
        ("tools", [{"type": "browser"}], "tools[0]", "invalid_value"),
        ("unknown_field", 1, "unknown_field", "unknown_parameter"),
        ("name", "nul\x00inside", "name", "invalid_value"),
        ("metadata", {"k": "nul\x00inside"}, "metadata.k", "invalid_value"),
    ],
)
def test_bad_fields_are_400_naming_the_param(client, field, value, param, code):
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="m", extra_body={field: value})
    assert (info.value.param, info.value.code, info.value.type) == (param, code, "invalid_request_error")


def test_name_at_its_limit_is_accepted(client):
    assert client.beta.assistants.create(model="m", name="n" * 256).name == "n" * 256


def _ids(page) -> list[str]:
    return [item.id for item in page.data]


def test_list_orders_and_cursors(client):
    mine = [client.beta.assistants.create(model="m", name=f"a{i}").id for i in range(5)]
    newest_first = list(reversed(mine))

    desc = client.beta.assistants.list(limit=5)
    assert _ids(desc) == newest_first
    assert (desc.first_id, desc.last_id) == (newest_first[0], newest_first[-1])

    page = client.beta.assistants.list(limit=2, after=mine[2], order="asc")
    assert _ids(page) == mine[3:5]
    assert page.has_more is False

    page = client.beta.assistants.list(limit=2, before=mine[4], order="asc")
    assert _ids(page) == mine[2:4] and page.has_more is True

    page = client.beta.assistants.list(limit=1, after=mine[4])
    assert _ids(page) == [mine[3]] and page.has_more is True

    page = client.beta.assistants.list(limit=2, before=mine[1])
    assert _ids(page) == [mine[3], mine[2]] and page.has_more is True


def test_list_limit_edges(client):
    for bad, code in ((0, "integer_below_min_value"), (101, "integer_above_max_value")):
        with pytest.raises(openai.BadRequestError) as info:
            client.beta.assistants.list(limit=bad)
        assert (info.value.param, info.value.code) == ("limit", code)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.list(order="sideways")
    assert info.value.param == "order"
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.list(after="asst_doesnotexist")
    assert info.value.param == "after"


METADATA_CASES = [
    pytest.param({f"k{i}": "v" for i in range(16)}, None, id="16-keys"),
    pytest.param({f"k{i}": "v" for i in range(17)}, "metadata.k16", id="17-keys"),
    pytest.param({"k" * 64: "v"}, None, id="64-char-key"),
    pytest.param({"k" * 65: "v"}, "metadata." + "k" * 65, id="65-char-key"),
    pytest.param({"long": "v" * 512}, None, id="512-char-value"),
    pytest.param({"long": "v" * 513}, "metadata.long", id="513-char-value"),
    pytest.param({"count": 3}, "metadata.count", id="non-string-value"),
]


@pytest.mark.parametrize(("metadata", "bad_param"), METADATA_CASES)
def test_metadata_limits_on_every_entity(client, metadata, bad_param):
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="hi")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10)
    calls = {
        "assistant create": lambda: client.beta.assistants.create(model="m", metadata=metadata),
        "assistant modify": lambda: client.beta.assistants.update(assistant.id, metadata=metadata),
        "thread create": lambda: client.beta.threads.create(metadata=metadata),
        "thread modify": lambda: client.beta.threads.update(thread.id, metadata=metadata),
        "message modify": lambda: client.beta.threads.messages.update(
            message.id, thread_id=thread.id, metadata=metadata
        ),
        "run modify": lambda: client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata=metadata),
    }
    for what, call in calls.items():
        if bad_param is None:
            assert call().metadata == metadata, what
        else:
            with pytest.raises(openai.BadRequestError) as info:
                call()
            assert info.value.param == bad_param, what
            assert info.value.type == "invalid_request_error", what
    if bad_param is not None:
        assert client.beta.assistants.retrieve(assistant.id).metadata == {}
