"""Run options through the openai responder, against the fake upstream on both APIs: the exact request bodies
(``response_format``, token limits, ``tool_choice``, ``parallel_tool_calls``, reasoning), a length stop ending the
run ``incomplete``, and reasoning items carried to the next round byte for byte."""

from __future__ import annotations

import openai
import pytest

from betaassi_django.assistants_api.models import RunStep
from tests.conftest import in_process_client
from tests.fake_upstream import Calls, Text
from tests.test_run_options import APPLES, INCOMPLETE_SUFFIX
from tests.test_upstream_runs import WEATHER_TOOL

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client() -> openai.OpenAI:
    return in_process_client()

SCHEMA = {"type": "object", "additionalProperties": False, "properties": {"city": {"type": "string"}},
          "required": ["city"]}


def _start(client, *texts: str, **assistant):
    created = client.beta.assistants.create(model=assistant.pop("model", "gpt-test"), **assistant)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": t} for t in texts])
    return created, thread


def _run(client, thread, assistant, **options):
    return client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                    poll_interval_ms=20, **options)


def _submit(client, thread, run, output: str = "14C"):
    outputs = [{"tool_call_id": c.id, "output": output} for c in run.required_action.submit_tool_outputs.tool_calls]
    return client.beta.threads.runs.submit_tool_outputs_and_poll(run_id=run.id, thread_id=thread.id,
                                                                 tool_outputs=outputs, poll_interval_ms=20)


@pytest.mark.parametrize(("given", "responses", "chat"), [
    ("auto", None, None),
    ({"type": "text"}, {"type": "text"}, {"type": "text"}),
    ({"type": "json_object"}, {"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "weather", "description": "A city.", "schema": SCHEMA,
                                             "strict": True}},
     {"type": "json_schema", "name": "weather", "schema": SCHEMA, "description": "A city.", "strict": True},
     {"type": "json_schema", "json_schema": {"name": "weather", "description": "A city.", "schema": SCHEMA,
                                             "strict": True}}),
    ({"type": "json_schema", "json_schema": {"name": "any"}},
     {"type": "json_schema", "name": "any", "schema": {"type": "object"}},
     {"type": "json_schema", "json_schema": {"name": "any"}}),
])
def test_response_format_is_sent_in_each_apis_shape(api, fake, client, given, responses, chat):
    fake.script(Text(['{"city": "Paris"}']))
    assistant, thread = _start(client, "Where?")
    run = _run(client, thread, assistant, response_format=given)
    assert run.status == "completed"
    [body] = fake.bodies()
    if api == "responses":
        assert body.get("text") == (None if responses is None else {"format": responses})
    else:
        assert body.get("response_format") == chat
    assert "max_output_tokens" not in body and "max_completion_tokens" not in body
    assert "include" not in body and "reasoning" not in body and "reasoning_effort" not in body


def test_the_assistants_response_format_is_sent_when_the_run_sets_none(api, fake, client):
    fake.script(Text(["{}"]))
    assistant, thread = _start(client, "Where?", response_format={"type": "json_object"})
    assert _run(client, thread, assistant).status == "completed"
    [body] = fake.bodies()
    assert (body["text"] if api == "responses" else body["response_format"]) == (
        {"format": {"type": "json_object"}} if api == "responses" else {"type": "json_object"})


def test_a_deep_and_a_large_schema_reach_the_upstream_exactly(api, fake, client):
    deep: dict = {"type": "string"}
    for _ in range(29):  # 2 levels each; with the body's own, 62 of the 64 levels the API accepts
        deep = {"type": "object", "properties": {"x": deep}}
    large = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 200}
                                              for i in range(5000)}}  # about 1.1 MB
    for schema in (deep, large):
        fake.requests.clear()
        fake.script(Text(["{}"]))
        assistant, thread = _start(client, "Where?")
        fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        assert _run(client, thread, assistant, response_format=fmt).status == "completed"
        [body] = fake.bodies()
        sent = body["text"]["format"]["schema"] if api == "responses" else body["response_format"]["json_schema"][
            "schema"]
        assert sent == schema
    too_deep = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object", "properties": {
        "x": deep}}}}
    for _ in range(8):
        too_deep["json_schema"]["schema"] = {"type": "object", "properties": {"x": too_deep["json_schema"]["schema"]}}
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, response_format=too_deep)
    assert info.value.code == "nesting_too_deep"


def test_max_completion_tokens_is_sent_and_a_length_stop_ends_the_run_incomplete(api, fake, client):
    fake.script(Text(["It ", "was ", "a dark"], usage=(20, 300), incomplete=True))
    assistant, thread = _start(client, "A story?")
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         max_completion_tokens=300) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
    [body] = fake.bodies()
    assert body["max_output_tokens" if api == "responses" else "max_completion_tokens"] == 300
    assert names[-3:] == INCOMPLETE_SUFFIX and names.count("thread.message.delta") == 3
    assert (run.status, run.incomplete_details.reason) == ("incomplete", "max_completion_tokens")
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (20, 300, 320)
    [reply] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert (reply.status, reply.incomplete_details.reason, reply.content[0].text.value) == (
        "incomplete", "max_tokens", "It was a dark")


def test_the_completion_budget_spans_the_runs_rounds(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Paris"}')], usage=(13, 5)), Text(["Sunny."], usage=(30, 4)))
    assistant, thread = _start(client, "Weather?", tools=[WEATHER_TOOL])
    run = _run(client, thread, assistant, max_completion_tokens=300)
    assert run.status == "requires_action"
    assert _submit(client, thread, run).status == "completed"
    key = "max_output_tokens" if api == "responses" else "max_completion_tokens"
    assert [b[key] for b in fake.bodies()] == [300, 295]


def test_a_spent_completion_budget_ends_the_run_without_asking_again(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Paris"}')], usage=(13, 256)))
    assistant, thread = _start(client, "Weather?", tools=[WEATHER_TOOL])
    run = _run(client, thread, assistant, max_completion_tokens=256)
    done = _submit(client, thread, run)
    assert (done.status, done.incomplete_details.reason) == ("incomplete", "max_completion_tokens")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (13, 256)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("choice", ["none", "auto", "required", {"type": "function",
                                                                 "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("parallel", [True, False])
def test_tool_choice_and_parallel_tool_calls_reach_the_upstream(api, fake, client, choice, parallel):
    fake.script(Text(["ok"]))
    assistant, thread = _start(client, "Weather?", tools=[WEATHER_TOOL])
    assert _run(client, thread, assistant, tool_choice=choice, parallel_tool_calls=parallel).status == "completed"
    [body] = fake.bodies()
    expected = choice
    if isinstance(choice, dict):
        expected = {"type": "function", "name": "get_weather"} if api == "responses" else choice
    assert (body["tool_choice"], body["parallel_tool_calls"]) == (expected, parallel)


def test_reasoning_items_are_carried_to_the_next_round(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Paris"}')], reasoning=True), Text(["Sunny."]))
    assistant, thread = _start(client, "Weather?", model="o4-mini", tools=[WEATHER_TOOL])
    run = _run(client, thread, assistant, reasoning_effort="low")
    assert run.status == "requires_action"
    assert _submit(client, thread, run).status == "completed"
    first, second = fake.bodies()
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    if api == "chat":
        assert fake.reasoning == [] and first["reasoning_effort"] == second["reasoning_effort"] == "low"
        assert "include" not in first
        return
    [item] = fake.reasoning
    assert item["encrypted_content"].startswith("gAAAAB")
    assert first["include"] == second["include"] == ["reasoning.encrypted_content"]
    assert first["reasoning"] == {"effort": "low"}
    assert second["input"] == [
        {"role": "user", "content": "Weather?"}, item,
        {"type": "function_call", "call_id": call.id, "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": call.id, "output": "14C"}]
    step = RunStep.objects.get(run__id=run.id, type="tool_calls")
    assert step.carried_items == [item]


def test_no_reasoning_is_asked_of_other_models_nor_carried_without_its_content(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Paris"}')], reasoning=True), Text(["Sunny."]))
    assistant, thread = _start(client, "Weather?", tools=[WEATHER_TOOL])
    assert _submit(client, thread, _run(client, thread, assistant)).status == "completed"
    first, second = fake.bodies()
    assert "include" not in first and "reasoning" not in first
    if api == "responses":
        assert "encrypted_content" not in fake.reasoning[0]
        assert [i.get("type") for i in second["input"]] == [None, "function_call", "function_call_output"]
    assert RunStep.objects.get(type="tool_calls").carried_items is None


def test_max_prompt_tokens_shapes_what_is_sent(api, fake, client):
    """3 tokens of priming, 103 an apples message, 5 for "Weather?": 256 holds the last two apples and it."""
    fake.script(Text(["ok"]))
    assistant, thread = _start(client, APPLES, APPLES, APPLES, "Weather?")
    assert _run(client, thread, assistant, max_prompt_tokens=256).status == "completed"
    [body] = fake.bodies()
    sent = body["input"] if api == "responses" else body["messages"]
    assert sent == [{"role": "user", "content": APPLES}] * 2 + [{"role": "user", "content": "Weather?"}]

    fake.requests.clear()
    assistant, thread = _start(client, " ".join(["apple"] * 300))
    run = _run(client, thread, assistant, max_prompt_tokens=256)
    assert (run.status, run.incomplete_details.reason) == ("incomplete", "max_prompt_tokens")
    assert fake.requests == []
