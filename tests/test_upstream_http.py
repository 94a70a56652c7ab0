"""Over real HTTP: daphne with ``BETAASSI_RESPONDER=openai`` pointed at the fake upstream, driven by the SDK."""

from __future__ import annotations

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url, http_client
from tests.fake_upstream import Calls, FakeUpstream, Status, Text

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module", params=["responses", "chat"])
def served(request):
    """A daphne server whose runs ask the fake upstream, through one upstream API."""
    with FakeUpstream() as fake, scratch_database_url(_database_url()) as url:
        env = {"BETAASSI_RESPONDER": "openai", "BETAASSI_UPSTREAM_API": request.param,
               "BETAASSI_UPSTREAM_BASE_URL": fake.base_url, "BETAASSI_UPSTREAM_API_KEY": "sk-upstream-http",
               "BETAASSI_UPSTREAM_MAX_RETRIES": "1"}
        with LiveServer(url, env=env, cwd=settings.BASE_DIR) as server:
            yield server, fake, request.param
    assert fake.violations == []


def test_tool_round_trip_over_http(served):
    server, fake, api = served
    fake.requests.clear()
    fake.script(Calls([("get_weather", '{"city": "Quito"}'), ("get_weather", '{"city": "Lima"}')]),
                Calls([("get_weather", '{"city": "Cusco"}')]),
                Text(["Quito 14C, ", "Lima 20C, ", "Cusco 9C."], usage=(40, 9)))
    client = http_client(server)
    assistant = client.beta.assistants.create(model="gpt-http", instructions="Use the tool.", tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Three cities?"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.arguments for c in calls] == ['{"city": "Quito"}', '{"city": "Lima"}']
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(  # not streamed
        run_id=run.id, thread_id=thread.id, poll_interval_ms=20,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": "14C"}, {"tool_call_id": calls[1].id, "output": "20C"}])
    [call] = run.required_action.submit_tool_outputs.tool_calls
    with client.beta.threads.runs.submit_tool_outputs_stream(  # streamed
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "9C"}]) as stream:
        deltas = list(stream.text_deltas)
        final = stream.get_final_run()
    assert deltas == ["Quito 14C, ", "Lima 20C, ", "Cusco 9C."]
    assert final.status == "completed" and final.usage.prompt_tokens == 13 + 13 + 40

    assert len(fake.requests) == 3
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer sk-upstream-http"}
    last = fake.requests[-1].body
    assert last["model"] == "gpt-http"
    if api == "responses":
        outputs = [i["output"] for i in last["input"] if i.get("type") == "function_call_output"]
        assert last["instructions"] == "Use the tool."
    else:
        outputs = [m["content"] for m in last["messages"] if m["role"] == "tool"]
        assert last["messages"][0] == {"role": "system", "content": "Use the tool."}
    assert outputs == ["14C", "20C", "9C"]


def test_a_rate_limited_upstream_fails_the_run_over_http(served):
    server, fake, _ = served
    fake.requests.clear()
    fake.script(Status(429, "Too many."), Status(429, "Too many."))
    client = http_client(server)
    assistant = client.beta.assistants.create(model="gpt-http")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=20)
    assert (run.status, run.last_error.code, run.last_error.message) == (
        "failed", "rate_limit_exceeded", "The upstream model is rate limited: Too many.")
    assert len(fake.requests) == 2  # one retry (BETAASSI_UPSTREAM_MAX_RETRIES=1)


def test_carried_reasoning_and_a_length_stop_over_http(served):
    """Run options over HTTP: the reasoning a round of calls came with goes back with its outputs (Responses), and
    the reply the model stops at its token limit ends the streamed run incomplete."""
    server, fake, api = served
    fake.requests.clear()
    fake.reasoning.clear()
    fake.script(Calls([("get_weather", '{"city": "Oslo"}')], reasoning=True),
                Text(["Oslo ", "is col"], usage=(30, 290), incomplete=True))
    client = http_client(server)
    assistant = client.beta.assistants.create(model="o4-mini", tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Oslo?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_completion_tokens=300, poll_interval_ms=20)
    [call] = run.required_action.submit_tool_outputs.tool_calls
    with client.beta.threads.runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "-3C"}]) as stream:
        names = [event.event for event in stream]
        final = stream.get_final_run()
    assert names[-3:] == ["thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"]
    assert (final.status, final.incomplete_details.reason) == ("incomplete", "max_completion_tokens")
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (13 + 30, 5 + 290)
    first, second = (r.body for r in fake.requests)
    if api == "responses":
        [item] = fake.reasoning
        assert first["include"] == ["reasoning.encrypted_content"] and item["encrypted_content"]
        assert second["input"][1] == item and second["input"][2]["type"] == "function_call"
        assert (first["max_output_tokens"], second["max_output_tokens"]) == (300, 295)
    else:
        assert (first["max_completion_tokens"], second["max_completion_tokens"]) == (300, 295)
