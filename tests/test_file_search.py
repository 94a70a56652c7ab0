"""The file_search tool in runs, with the echo responder, through the openai SDK (in-process and over HTTP, every
response and stream event validated against the specification): files, a vector store, an assistant with
file_search, the run's tool_calls step and the reply's citation; attachments; hostile resources."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import cancel_after_deltas, http_client
from tests.test_api_hostile import raw_client
from tests.test_api_scopes import key_client, refused

pytestmark = pytest.mark.django_db(transaction=True)

INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"
HANDBOOK = b"# Handbook\n\nThe office opens at nine. Parking is behind the library.\n"
MENU = b"Lunch menu: soup, bread and apples on Fridays.\n"


def upload(client, name: str, data: bytes):
    return client.files.create(file=(name, data, "text/markdown"), purpose="assistants")


def store_with(client, *files) -> str:
    """A vector store holding these files, ingested (``create_and_poll``)."""
    store = client.vector_stores.create(name="kb")
    for file in files:
        done = client.vector_stores.files.create_and_poll(file.id, vector_store_id=store.id, poll_interval_ms=20)
        assert done.status in ("completed", "failed")
    return store.id


def steps_of(client, thread_id: str, run_id: str, **options):
    return client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc", **options).data


def test_a_run_cites_the_file_it_found(client):
    handbook, menu = upload(client, "handbook.md", HANDBOOK), upload(client, "menu.md", MENU)
    store_id = store_with(client, handbook, menu)
    assistant = client.beta.assistants.create(
        model="m", tools=[{"type": "file_search", "file_search": {"max_num_results": 5}}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    assert assistant.tool_resources.file_search.vector_store_ids == [store_id]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "parking library"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "completed"
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    text = reply.content[0].text
    assert text.value == "echo: parking library [context=1] 【0:0†handbook.md】"
    [citation] = text.annotations
    assert citation.model_dump() == {"type": "file_citation", "text": "【0:0†handbook.md】",
                                     "file_citation": {"file_id": handbook.id},
                                     "start_index": 34, "end_index": 51}
    assert text.value[citation.start_index:citation.end_index] == citation.text

    search_step, message_step = steps_of(client, thread.id, run.id)
    assert (search_step.type, search_step.status, message_step.type) == ("tool_calls", "completed",
                                                                         "message_creation")
    assert message_step.step_details.message_creation.message_id == reply.id
    [call] = search_step.step_details.tool_calls
    assert call.type == "file_search" and call.id.startswith("call_")
    assert call.file_search.model_dump(exclude_none=True) == {
        "ranking_options": {"ranker": "auto", "score_threshold": 0.0}}
    # With include[]: the results, their scores and content.
    [with_content, _] = steps_of(client, thread.id, run.id, include=[INCLUDE])
    [result] = with_content.step_details.tool_calls[0].file_search.results
    assert (result.file_id, result.file_name) == (handbook.id, "handbook.md")
    assert 0 < result.score <= 1
    assert [c.model_dump() for c in result.content] == [{"type": "text", "text": HANDBOOK.decode()}]
    one = client.beta.threads.runs.steps.retrieve(search_step.id, thread_id=thread.id, run_id=run.id,
                                                  include=[INCLUDE])
    assert one.step_details.tool_calls[0].file_search.results[0].file_id == handbook.id
    # Usage: the search step's and the reply's, summed on the run.
    assert run.usage.total_tokens == search_step.usage.total_tokens + message_step.usage.total_tokens


def test_runs_without_file_search_echo_as_before(client):
    store_id = store_with(client, upload(client, "handbook.md", HANDBOOK))
    assistant = client.beta.assistants.create(model="m", tool_resources={
        "file_search": {"vector_store_ids": [store_id]}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "parking"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.value == "echo: parking [context=1]"
    assert [s.type for s in steps_of(client, thread.id, run.id)] == ["message_creation"]
    # tool_choice none: the tool is not offered either.
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   tools=[{"type": "file_search"}], tool_choice="none",
                                                   poll_interval_ms=20)
    assert [s.type for s in steps_of(client, thread.id, run.id)] == ["message_creation"]


def test_a_streamed_run_with_a_search(client):
    handbook = upload(client, "handbook.md", HANDBOOK)
    store_id = store_with(client, handbook)
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "office nine"}],
                                        tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    events = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         include=[INCLUDE]) as stream:
        for event in stream:
            events.append(event)
        final = stream.get_final_messages()
    names = [e.event for e in events]
    assert names[:9] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                         "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta",
                         "thread.run.step.completed", "thread.run.step.created", "thread.run.step.in_progress"]
    assert names[9:11] == ["thread.message.created", "thread.message.in_progress"]
    assert set(names[11:-3]) == {"thread.message.delta"}  # the text's, then one with the annotation
    assert names[-3:] == ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]
    search_done = events[6].data
    assert search_done.step_details.tool_calls[0].file_search.results[0].file_id == handbook.id
    assert search_done.step_details.tool_calls[0].file_search.results[0].content[0].text == HANDBOOK.decode()
    delta = events[5].data.delta.step_details.tool_calls[0]
    assert (delta.index, delta.type, delta.id) == (0, "file_search", search_done.step_details.tool_calls[0].id)
    [message] = final
    assert message.content[0].text.value == "echo: office nine [context=1] 【0:0†handbook.md】"
    assert message.content[0].text.annotations[0].file_citation.file_id == handbook.id
    annotated = [e for e in events if e.event == "thread.message.delta" and e.data.delta.content[0].text.annotations]
    [annotation] = annotated[-1].data.delta.content[0].text.annotations
    assert (annotation.index, annotation.text, annotation.start_index) == (0, "【0:0†handbook.md】", 30)


def test_attachments_make_the_threads_store(client):
    menu = upload(client, "menu.md", MENU)
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create()
    assert thread.tool_resources is None
    message = client.beta.threads.messages.create(thread.id, role="user", content="soup fridays",
                                                  attachments=[{"file_id": menu.id,
                                                                "tools": [{"type": "file_search"}]}])
    assert message.attachments[0].file_id == menu.id
    thread = client.beta.threads.retrieve(thread.id)
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_after.model_dump() == {"anchor": "last_active_at", "days": 7}
    [vs_file] = client.vector_stores.files.list(store_id).data
    assert vs_file.id == menu.id
    client.vector_stores.files.poll(menu.id, vector_store_id=store_id, poll_interval_ms=20)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.value == "echo: soup fridays [context=1] 【0:0†menu.md】"
    assert reply.content[0].text.annotations[0].file_citation.file_id == menu.id
    # A second attachment goes into the same store; one already in it is not added twice.
    other = upload(client, "handbook.md", HANDBOOK)
    client.beta.threads.messages.create(thread.id, role="user", content="again", attachments=[
        {"file_id": menu.id, "tools": [{"type": "file_search"}]},
        {"file_id": other.id, "tools": [{"type": "file_search"}]}])
    assert client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids == [store_id]
    assert sorted(f.id for f in client.vector_stores.files.list(store_id).data) == sorted([menu.id, other.id])


def test_attachments_on_a_new_thread_and_on_additional_messages(client):
    menu, handbook = upload(client, "menu.md", MENU), upload(client, "handbook.md", HANDBOOK)
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello", "attachments": [
        {"file_id": menu.id, "tools": [{"type": "file_search"}]}]}])
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    client.vector_stores.files.poll(menu.id, vector_store_id=store_id, poll_interval_ms=20)
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20,
        additional_messages=[{"role": "user", "content": "parking", "attachments": [
            {"file_id": handbook.id, "tools": [{"type": "file_search"}]}]}])
    assert run.status == "completed"
    assert sorted(f.id for f in client.vector_stores.files.list(store_id).data) == sorted([menu.id, handbook.id])
    # code_interpreter attachments are kept on the message and add nothing to a store.
    client.beta.threads.messages.create(thread.id, role="user", content="x", attachments=[
        {"file_id": handbook.id, "tools": [{"type": "code_interpreter"}]}])
    assert len(client.vector_stores.files.list(store_id).data) == 2


def test_the_vector_stores_helper_creates_a_store(client):
    menu = upload(client, "menu.md", MENU)
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_stores": [{"file_ids": [menu.id]}]}})
    [store_id] = assistant.tool_resources.file_search.vector_store_ids
    [vs_file] = client.vector_stores.files.list(store_id).data
    assert vs_file.id == menu.id
    thread = client.beta.threads.create(tool_resources={"file_search": {"vector_stores": [{"file_ids": []}]}})
    assert thread.tool_resources.file_search.vector_store_ids[0].startswith("vs_")


def test_a_search_with_no_results_and_a_store_of_failed_files(client):
    broken = client.files.create(file=("broken.pdf", b"%PDF-1.7 not really", "application/pdf"),
                                 purpose="assistants")
    store_id = store_with(client, broken)
    assert client.vector_stores.files.retrieve(broken.id, vector_store_id=store_id).status == "failed"
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_store_ids": [store_id]}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "anything"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20, include=[INCLUDE])
    assert run.status == "completed"
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert (reply.content[0].text.value, reply.content[0].text.annotations) == (
        "echo: anything [context=1] [no results]", [])
    search_step = steps_of(client, thread.id, run.id, include=[INCLUDE])[0]
    assert search_step.step_details.tool_calls[0].file_search.results == []


def _refused(call) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    return info.value.body


def test_hostile_resources_are_400_naming_the_param(client):
    menu = upload(client, "menu.md", MENU)
    store_id = client.vector_stores.create(name="x").id
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create()
    cases = [
        (lambda: client.beta.assistants.create(model="m", tool_resources={
            "file_search": {"vector_store_ids": ["vs_nope"]}}), "tool_resources.file_search.vector_store_ids[0]"),
        (lambda: client.beta.assistants.create(model="m", tool_resources={
            "file_search": {"vector_store_ids": [assistant.id]}}), "tool_resources.file_search.vector_store_ids[0]"),
        (lambda: client.beta.assistants.create(model="m", tool_resources={
            "file_search": {"vector_store_ids": [store_id, store_id]}}), "tool_resources.file_search.vector_store_ids"),
        (lambda: client.beta.threads.create(tool_resources={"file_search": {
            "vector_store_ids": [store_id], "vector_stores": [{"file_ids": [menu.id]}]}}),
         "tool_resources.file_search"),
        (lambda: client.beta.threads.create(tool_resources={"file_search": {
            "vector_stores": [{"file_ids": [menu.id, "file-nope"]}]}}),
         "tool_resources.file_search.vector_stores[0].file_ids[1]"),
        (lambda: client.beta.assistants.update(assistant.id, tool_resources={
            "file_search": {"vector_store_ids": ["vs_" + "9" * 40]}}),
         "tool_resources.file_search.vector_store_ids[0]"),
        (lambda: client.beta.threads.messages.create(thread.id, role="user", content="x", attachments=[
            {"file_id": menu.id, "tools": [{"type": "file_search"}]},
            {"file_id": "file-nope", "tools": [{"type": "file_search"}]}]), "attachments[1].file_id"),
        (lambda: client.beta.threads.messages.create(thread.id, role="user", content="x", attachments=[
            {"file_id": store_id, "tools": [{"type": "code_interpreter"}]}]), "attachments[0].file_id"),
        (lambda: client.beta.threads.create(messages=[{"role": "user", "content": "x"}, {
            "role": "user", "content": "y", "attachments": [{"file_id": "f" * 5000, "tools": []}]}]),
         "messages[1].attachments[0].file_id"),
        (lambda: client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, additional_messages=[
            {"role": "user", "content": "y", "attachments": [{"file_id": "file-x", "tools": [
                {"type": "file_search"}]}]}]), "additional_messages[0].attachments[0].file_id"),
        (lambda: client.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [
            {"role": "user", "content": "y", "attachments": [{"file_id": "file-x", "tools": [
                {"type": "file_search"}]}]}]}), "thread.messages[0].attachments[0].file_id"),
    ]
    stores_before = {s.id for s in client.vector_stores.list(limit=100).data}
    threads_before = client.beta.threads.messages.list(thread.id).data
    for call, param in cases:
        assert _refused(call)["param"] == param
    # Nothing was written: no store, no message, no thread store.
    assert {s.id for s in client.vector_stores.list(limit=100).data} == stores_before
    assert client.beta.threads.messages.list(thread.id).data == threads_before
    assert client.beta.threads.retrieve(thread.id).tool_resources is None
    message = _refused(cases[0][0])["message"]
    assert message == "Invalid 'tool_resources.file_search.vector_store_ids[0]': no vector store with id 'vs_nope'."


@pytest.fixture(params=["in_process", "http"])
def api(request):
    """Raw HTTP to the API, on both transports (responses validated)."""
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    with raw_client(request.param, server) as raw:
        yield raw


def test_raw_hostile_resources(api):
    """What the SDK cannot send: lone surrogates, deep nesting, ids of every kind in the wrong place."""
    thread = api.post("/threads", json={}).json()
    raw = [
        ('/assistants', '{"model": "m", "tool_resources": {"file_search": {"vector_store_ids": ["\\ud800"]}}}',
         "tool_resources.file_search.vector_store_ids[0]"),
        (f'/threads/{thread["id"]}/messages',
         '{"role": "user", "content": "x", "attachments": [{"file_id": "\\ud800", "tools": []}]}',
         "attachments[0].file_id"),
        (f'/threads/{thread["id"]}/messages',
         '{"role": "user", "content": "x", "attachments": [{"file_id": ' + "[" * 500 + "]" * 500 + ', "tools": []}]}',
         None),  # refused as too deep before any schema
    ]
    for path, body, param in raw:
        response = api.post(path, content=body.encode())
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param, body[:80]
    assert api.get(f'/threads/{thread["id"]}/messages').json()["data"] == []


def test_a_key_limited_to_assistants_may_not_name_files_or_stores(daphne_server):
    full = http_client(daphne_server)
    assistant = full.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    store_id = full.vector_stores.create(name="not theirs").id
    menu = upload(full, "menu.md", MENU)
    limited = key_client(daphne_server, "--assistant", assistant.id)
    thread = limited.beta.threads.create(metadata={"betaassi_assistant": assistant.id})
    attached = [{"file_id": menu.id, "tools": [{"type": "file_search"}]}]
    message = ("You have insufficient permissions for this operation: this API key is limited to some assistants "
               "and their threads, and files and vector stores belong to no assistant: use a key without that limit.")
    for call in [
        lambda: limited.beta.assistants.update(assistant.id, tool_resources={
            "file_search": {"vector_store_ids": [store_id]}}),
        lambda: limited.beta.threads.update(thread.id, tool_resources={"file_search": {"vector_store_ids": []}}),
        lambda: limited.beta.threads.create(metadata={"betaassi_assistant": assistant.id}, tool_resources={
            "file_search": {"vector_stores": [{"file_ids": [menu.id]}]}}),
        lambda: limited.beta.threads.messages.create(thread.id, role="user", content="x", attachments=attached),
        lambda: limited.beta.threads.runs.create(thread.id, assistant_id=assistant.id, additional_messages=[
            {"role": "user", "content": "x", "attachments": attached}]),
        lambda: limited.beta.threads.create_and_run(assistant_id=assistant.id, thread={
            "metadata": {"betaassi_assistant": assistant.id},
            "messages": [{"role": "user", "content": "x", "attachments": attached}]}),
    ]:
        refused(call, message)
    assert full.beta.threads.retrieve(thread.id).tool_resources is None
    assert full.beta.threads.messages.list(thread.id).data == []
    # Naming none, the key still runs its assistant (which has no store: echo as usual).
    limited.beta.threads.messages.create(thread.id, role="user", content="hi")
    run = limited.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                    poll_interval_ms=20)
    [reply] = limited.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.value == "echo: hi [context=1]"


def test_a_run_cancelled_after_its_search(client):
    store_id = store_with(client, upload(client, "handbook.md", HANDBOOK))
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_store_ids": [store_id]}})
    words = " ".join(f"parking{i}" for i in range(40))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"parking {words}"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        names = cancel_after_deltas(client, stream, thread.id, 2)
    assert names[-1] == "thread.run.cancelled"
    run = client.beta.threads.runs.list(thread.id).data[0]
    assert run.status == "cancelled"
    steps = steps_of(client, thread.id, run.id)
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "cancelled")]
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.status == "incomplete" and reply.content[0].text.annotations == []


def test_create_and_run_with_the_threads_store(client):
    menu = upload(client, "menu.md", MENU)
    assistant = client.beta.assistants.create(model="m")
    store_id = store_with(client, menu)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, tools=[{"type": "file_search"}], poll_interval_ms=20,
        thread={"messages": [{"role": "user", "content": "apples"}]},
        tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    assert run.status == "completed" and run.tools[0].type == "file_search"
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.tool_resources.file_search.vector_store_ids == [store_id]
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.value == "echo: apples [context=1] 【0:0†menu.md】"
    assert reply.content[0].text.annotations[0].file_citation.file_id == menu.id


def test_a_run_whose_store_expired_fails_and_searches_nothing():
    """As OpenAI's: a run on a thread whose vector store expired fails, saying which store and what to do; the
    model is not asked. In-process only: the test moves the store's clock in its own database."""
    from betaassi_django.assistants_api.models import VectorStore
    from tests.conftest import in_process_client

    client = in_process_client()
    store_id = store_with(client, upload(client, "handbook.md", HANDBOOK))
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "parking"}],
                                        tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    VectorStore.objects.filter(id=store_id).update(expires_at=1)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert (run.status, run.last_error.model_dump()) == ("failed", {
        "code": "invalid_prompt", "message": f"Vector store '{store_id}' has expired. Create a new vector store with "
                                             f"its files and attach it to the thread or the assistant."})
    # As every failed run's: its reply's step failed (a step's last_error has no invalid_prompt: server_error), no
    # search step, the reply empty and incomplete.
    [step] = steps_of(client, thread.id, run.id)
    assert (step.type, step.status, step.last_error.model_dump()) == ("message_creation", "failed", {
        "code": "server_error", "message": run.last_error.message})
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert (reply.status, reply.incomplete_details.reason, reply.content) == ("incomplete", "run_failed", [])
