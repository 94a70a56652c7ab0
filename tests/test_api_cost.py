"""What an embedded API request costs in statements (issue 16): the requests every client makes all the time
send one statement each (``assistants_api/statements.py``), and fall back to the ordinary path, with its
lookups and errors, only when that one statement cannot answer."""

from __future__ import annotations

import time

import openai
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from betaassi_django.assistants_api.models import Message, Run, Thread
from tests.conftest import in_process_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client() -> openai.OpenAI:
    return in_process_client()


def _statements(func) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        result = func()
    return result, [q["sql"] for q in queries if q["sql"] not in ("BEGIN",)]


def test_creating_a_message_is_one_statement(client):
    thread = client.beta.threads.create()
    message, sql = _statements(lambda: client.beta.threads.messages.create(thread.id, role="user", content="hi",
                                                                          metadata={"k": "v"}))
    assert len(sql) == 1 and sql[0].startswith("INSERT"), sql
    stored = Message.objects.get(id=message.id)
    assert (stored.thread.id, stored.role, stored.metadata, stored.attachments) == (thread.id, "user", {"k": "v"}, [])
    assert stored.content == [{"type": "text", "text": {"value": "hi", "annotations": []}}]
    assert (message.created_at, message.status, message.thread_id) == (stored.created_at, "completed", thread.id)


def test_creating_a_thread_without_messages_is_one_statement(client):
    thread, sql = _statements(lambda: client.beta.threads.create(metadata={"a": "b"}))
    assert len(sql) == 1 and sql[0].startswith("INSERT"), sql
    stored = Thread.objects.get(id=thread.id)
    assert (stored.metadata, stored.tool_resources, stored.created_at) == ({"a": "b"}, None, thread.created_at)


def test_a_page_of_messages_is_one_statement_and_a_cursor_one_more(client):
    thread = client.beta.threads.create()
    ids = [client.beta.threads.messages.create(thread.id, role="user", content=str(i)).id for i in range(5)]
    page, sql = _statements(lambda: client.beta.threads.messages.list(thread.id, limit=2))
    assert [m.id for m in page.data] == ids[:-3:-1] and page.has_more is True
    assert len(sql) == 1, sql
    page, sql = _statements(lambda: client.beta.threads.messages.list(thread.id, order="asc", after=ids[1],
                                                                      before=ids[4]))
    assert [m.id for m in page.data] == ids[2:4] and page.has_more is False
    assert len(sql) == 3, sql  # the two cursors' seqs, then the page


def test_an_empty_page_reads_the_thread_to_tell_empty_from_missing(client):
    thread = client.beta.threads.create()
    page, sql = _statements(lambda: client.beta.threads.messages.list(thread.id))
    assert (page.data, page.has_more, len(sql)) == ([], False, 2)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list("thread_" + "x" * 24)


def test_a_missing_thread_is_a_404_before_a_bad_query_or_cursor(client):
    for options in ({"limit": 0}, {"after": "msg_" + "x" * 24}, {"order": "up"}):
        with pytest.raises(openai.NotFoundError):
            client.beta.threads.messages.list("thread_" + "x" * 24, **options)
    thread = client.beta.threads.create()
    other = client.beta.threads.create()
    foreign = client.beta.threads.messages.create(other.id, role="user", content="x").id
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.list(thread.id, after=foreign)
    assert (info.value.body["param"], info.value.body["code"]) == ("after", "invalid_cursor")


def test_a_message_on_a_missing_thread_or_beside_an_active_run_takes_the_ordinary_path(client):
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.create("thread_" + "x" * 24, role="user", content="x")
    thread = client.beta.threads.create()
    row = Thread.objects.get(id=thread.id)
    run = Run.objects.create(thread=row, assistant_id="asst_x", model="m", status="requires_action",
                             expires_at=int(time.time()) + 600)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(thread.id, role="user", content="x")
    assert run.id in info.value.body["message"]
    assert not Message.objects.filter(thread=row).exists()
    Run.objects.filter(pk=run.pk).update(expires_at=int(time.time()) - 1)  # its time ran out: it is expired now
    client.beta.threads.messages.create(thread.id, role="user", content="x")
    assert Run.objects.get(pk=run.pk).status == "expired"
    assert Message.objects.filter(thread=row).count() == 1


def test_a_page_copies_the_stored_json_and_equals_each_message_read_alone(client):
    """The page is built from the JSON text the database stores (not decoded and encoded again): every message
    in it is the message ``retrieve`` returns, whatever its text holds."""
    thread = client.beta.threads.create()
    texts = ['quote " backslash \\ newline \n tab \t', "é 日本 🙂", "\u2028 \x01", ""]
    for index, text in enumerate(texts):
        client.beta.threads.messages.create(thread.id, role="user", content=text or "x",
                                            metadata={"n": str(index), "ü": "ß \" \\"},
                                            attachments=[] if index % 2 else None)
    page = client.beta.threads.messages.list(thread.id, order="asc")
    assert [m.content[0].text.value for m in page.data] == [t or "x" for t in texts]
    for message in page.data:
        assert message.model_dump() == client.beta.threads.messages.retrieve(message.id,
                                                                             thread_id=thread.id).model_dump()
    assert (page.first_id, page.last_id, page.has_more) == (page.data[0].id, page.data[-1].id, False)


def test_ids_are_24_characters_of_the_62_from_one_random_read():
    import re
    import string

    from betaassi_django.assistants_api.ids import new_id

    made = [new_id("msg") for _ in range(2000)]
    assert all(re.fullmatch(r"msg_[A-Za-z0-9]{24}", made_id) for made_id in made)
    assert len(set(made)) == len(made)
    assert set("".join(m[4:] for m in made)) == set(string.ascii_letters + string.digits)


BAD_BODIES = [
    ("CreateMessageRequest", {"role": "robot", "content": "x"}),
    ("CreateMessageRequest", {"role": "user", "content": [{"type": "text"}]}),
    ("CreateMessageRequest", {"role": "user", "content": 5, "metadata": {"k": 1}}),
    ("CreateMessageRequest", {"role": "user", "content": "x", "attachments": [{"file_id": 3}]}),
    ("CreateThreadRequest", {"messages": [{"role": "user"}], "metadata": []}),
    ("CreateThreadRequest", {"tool_resources": {"code_interpreter": {"file_ids": "x"}}, "extra": 1}),
    ("CreateAssistantRequest", {"model": "m", "tools": [{"type": "function", "function": {"name": 5}}]}),
    ("CreateAssistantRequest", {"model": "m", "temperature": 9, "response_format": {"type": "nope"}}),
    ("CreateRunRequest", {"assistant_id": "a", "tool_choice": {"type": "function"}, "truncation_strategy": 1}),
    ("CreateThreadAndRunRequest", {"assistant_id": "a", "thread": {"messages": [{"role": "user", "content": []}]}}),
    ("SubmitToolOutputsRunRequest", {"tool_outputs": [{"output": 1}]}),
    ("ModifyAssistantRequest", {"tools": [{"type": "file_search", "file_search": {"max_num_results": 500}}]}),
]


@pytest.mark.parametrize(("schema", "body"), BAD_BODIES)
def test_the_inlined_request_schemas_refuse_as_the_referenced_ones_do(schema, body):
    """The validators hold the request schemas with their references inlined (none is looked up per request):
    a bad body gets the very error the schema with its references gave."""
    import json

    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from betaassi_django.assistants_api import validation

    inlined = validation.validator(schema)
    assert '"$ref"' not in json.dumps(inlined.schema)
    referenced = Draft202012Validator({"$ref": f"{validation.SCHEMAS_URI}#/components/schemas/{schema}"},
                                      registry=validation._registry())
    expected, got = best_match(referenced.iter_errors(body)), best_match(inlined.iter_errors(body))
    assert expected is not None and got is not None
    assert (list(got.absolute_path), got.validator, got.message) == (
        list(expected.absolute_path), expected.validator, expected.message)
    assert validation._error_for(got).response().content == validation._error_for(expected).response().content
