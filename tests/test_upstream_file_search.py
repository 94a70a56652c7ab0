"""file_search with the openai responder: the fake upstream calls the ``file_search`` function the run offers, the
app searches and sends the results back in the same execution, and the model's citation markers become the
reply's annotations (Responses and Chat Completions)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.conftest import in_process_client
from tests.fake_upstream import Calls, Text
from tests.test_upstream_runs import WEATHER_TOOL

pytestmark = pytest.mark.django_db(transaction=True)

INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"
HANDBOOK = "The office opens at nine. Parking is behind the library.\n"


@pytest.fixture
def client() -> openai.OpenAI:
    return in_process_client()


def _ingested(client, store_id: str, file_id: str) -> None:
    deadline = time.monotonic() + 30
    while client.vector_stores.files.retrieve(file_id, vector_store_id=store_id).status == "in_progress":
        assert time.monotonic() < deadline, "the file was not ingested in time"
        time.sleep(0.02)


def _assistant(client, **options):
    handbook = client.files.create(file=("handbook.md", HANDBOOK.encode(), "text/markdown"), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-test", tools=[{"type": "file_search"}, *options.pop(
        "tools", [])], tool_resources={"file_search": {"vector_stores": [{"file_ids": [handbook.id]}]}})
    store_id = assistant.tool_resources.file_search.vector_store_ids[0]
    _ingested(client, store_id, handbook.id)
    return assistant, handbook


def _tool_output(api: str, body: dict) -> tuple[dict, dict]:
    """The file_search call the product sent back, and its output (parsed)."""
    if api == "responses":
        call = next(i for i in body["input"] if i.get("type") == "function_call")
        output = next(i for i in body["input"] if i.get("type") == "function_call_output")
        return call, json.loads(output["output"])
    call = next(m for m in body["messages"] if m.get("tool_calls"))["tool_calls"][0]
    output = next(m for m in body["messages"] if m["role"] == "tool")
    return call, json.loads(output["content"])


def _offered(api: str, body: dict) -> list[str]:
    if api == "responses":
        return [t["name"] for t in body.get("tools", [])]
    return [t["function"]["name"] for t in body.get("tools", [])]


def test_the_model_searches_and_cites(api, fake, client):
    fake.script(Calls([("file_search", '{"queries": ["parking library"]}')], usage=(40, 6)),
                Text(["Parking is behind ", "the library【0:0†hand", "book.md】."], usage=(90, 12)))
    assistant, handbook = _assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Where do I park?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "completed"
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (130, 18)
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    text = reply.content[0].text
    assert text.value == "Parking is behind the library【0:0†handbook.md】."
    assert [a.model_dump() for a in text.annotations] == [{
        "type": "file_citation", "text": "【0:0†handbook.md】", "file_citation": {"file_id": handbook.id},
        "start_index": 29, "end_index": 46}]
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc",
                                                include=[INCLUDE]).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert (steps[0].usage.prompt_tokens, steps[1].usage.prompt_tokens) == (40, 90)
    [result] = steps[0].step_details.tool_calls[0].file_search.results
    assert (result.file_id, result.file_name, result.content[0].text) == (handbook.id, "handbook.md", HANDBOOK)

    first, second = fake.requests[0].body, fake.requests[1].body
    assert _offered(api, first) == ["file_search"] and first["tool_choice"] == "auto"
    call, output = _tool_output(api, second)
    arguments = call["arguments"] if api == "responses" else call["function"]["arguments"]
    assert arguments == '{"queries": ["parking library"]}'
    [given] = output["results"]
    assert (given["citation"], given["file_name"], given["text"]) == ("【0:0†handbook.md】", "handbook.md", HANDBOOK)


def test_tool_choice_file_search_forces_one_search(api, fake, client):
    fake.script(Calls([("file_search", '{"query": "office"}')]), Text(["Nine."]))
    assistant, _ = _assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "When?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   tool_choice={"type": "file_search"}, poll_interval_ms=20)
    assert run.status == "completed" and run.tool_choice.type == "file_search"
    first, second = fake.requests[0].body, fake.requests[1].body
    forced = ({"type": "function", "name": "file_search"} if api == "responses"
              else {"type": "function", "function": {"name": "file_search"}})
    assert (first["tool_choice"], second["tool_choice"]) == (forced, "auto")
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert (reply.content[0].text.value, reply.content[0].text.annotations) == ("Nine.", [])


def test_a_search_with_a_function_call_then_outputs(api, fake, client):
    fake.script(Calls([("file_search", '{"queries": ["office"]}'), ("get_weather", '{"city": "Oslo"}')]),
                Text(["Open at nine【0:0†handbook.md】, and sunny."]))
    assistant, handbook = _assistant(client, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Office hours and weather?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "requires_action"
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
        poll_interval_ms=20)
    assert run.status == "completed"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.step_details.tool_calls[0].type if s.type == "tool_calls" else None) for s in steps] == [
        ("tool_calls", "file_search"), ("tool_calls", "function"), ("message_creation", None)]
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.annotations[0].file_citation.file_id == handbook.id
    # The continued request sends the search round again, then the function round.
    second = fake.requests[1].body
    if api == "responses":
        kinds = [(i.get("type"), i.get("name")) for i in second["input"] if i.get("type")]
        assert kinds == [("function_call", "file_search"), ("function_call_output", None),
                         ("function_call", "get_weather"), ("function_call_output", None)]
    else:
        calls = [m["tool_calls"][0]["function"]["name"] for m in second["messages"] if m.get("tool_calls")]
        assert calls == ["file_search", "get_weather"]


def test_three_search_rounds_at_most_and_the_tools_options(api, fake, client):
    fake.script(*[Calls([("file_search", '{"queries": ["office parking"]}')])] * 3, Text(["Done."]))
    assistant, _ = _assistant(client)
    client.vector_stores.files.create_and_poll(
        client.files.create(file=("more.md", b"The office has parking too.\n", "text/markdown"),
                            purpose="assistants").id,
        vector_store_id=assistant.tool_resources.file_search.vector_store_ids[0], poll_interval_ms=20)
    options = {"max_num_results": 1, "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0}}
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Office?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   tools=[{"type": "file_search", "file_search": options}],
                                                   poll_interval_ms=20)
    assert run.status == "completed"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc", include=[INCLUDE]).data
    assert [s.type for s in steps] == ["tool_calls"] * 3 + ["message_creation"]
    for step in steps[:3]:
        search = step.step_details.tool_calls[0].file_search
        assert search.ranking_options.model_dump() == options["ranking_options"]
        assert len(search.results) == 1  # max_num_results
    assert [_offered(api, r.body) for r in fake.requests] == [["file_search"]] * 3 + [[]]
    last = fake.requests[3].body
    rounds = ([i for i in last["input"] if i.get("type") == "function_call_output"] if api == "responses"
              else [m for m in last["messages"] if m["role"] == "tool"])
    assert len(rounds) == 3
