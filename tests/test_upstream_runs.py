"""The openai responder against a fake upstream speaking the Responses and Chat Completions wire formats.

Each scenario drives the embedded API through the official SDK (in-process,
every response validated against the specification) and asserts both what the
product sent upstream and what it did with the answer.
"""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import cancel_after_deltas, in_process_client, wait_for_run
from tests.fake_upstream import Calls, Failed, Hang, Refusal, Status, Text

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture
def client() -> openai.OpenAI:
    return in_process_client()


def _sent_messages(api: str, body: dict) -> list:
    """The conversation the product sent, in a form common to both APIs."""
    if api == "responses":
        return body["input"]
    return body["messages"]


def test_a_reply_streams_from_upstream_with_what_was_sent(api, fake, client):
    fake.script(Text(["It ", "is ", "sunny."], usage=(21, 3)))
    assistant = client.beta.assistants.create(model="gpt-test", instructions="You are terse.", temperature=0.3,
                                              top_p=0.9)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "first"},
                                                  {"role": "assistant", "content": "noted"},
                                                  {"role": "user", "content": "weather?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         additional_instructions="Answer in English.",
                                         truncation_strategy={"type": "last_messages", "last_messages": 2}) as stream:
        deltas = list(stream.text_deltas)
        run = stream.get_final_run()
    assert deltas == ["It ", "is ", "sunny."]
    assert run.status == "completed"
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (21, 3, 24)
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.role, reply.status, reply.content[0].text.value) == ("assistant", "completed", "It is sunny.")

    [request] = fake.requests
    body = request.body
    assert request.headers["authorization"] == "Bearer sk-upstream-test"
    assert (body["model"], body["temperature"], body["top_p"], body["stream"]) == ("gpt-test", 0.3, 0.9, True)
    assert "tools" not in body
    if api == "responses":
        assert request.path == "/v1/responses"
        assert body["instructions"] == "You are terse.\n\nAnswer in English."
        assert body["input"] == [{"role": "assistant", "content": "noted"}, {"role": "user", "content": "weather?"}]
        assert body["store"] is False
    else:
        assert request.path == "/v1/chat/completions"
        assert body["messages"] == [{"role": "system", "content": "You are terse.\n\nAnswer in English."},
                                    {"role": "assistant", "content": "noted"},
                                    {"role": "user", "content": "weather?"}]
        assert body["stream_options"] == {"include_usage": True}


def test_model_from_the_run_and_no_sampling_when_unset(api, fake, client):
    fake.script(Text(["ok"]))
    assistant = client.beta.assistants.create(model="gpt-assistant")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   model="gpt-run", temperature=1.5, poll_interval_ms=20)
    assert run.status == "completed"
    body = fake.requests[0].body
    assert (body["model"], body["temperature"], body["top_p"]) == ("gpt-run", 1.5, 1.0)
    assert _sent_messages(api, body)[-1] == {"role": "user", "content": "hi"}


def test_one_function_call_round_trip(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Paris"}')]), Text(["Sunny ", "in Paris."], usage=(30, 4)))
    assistant = client.beta.assistants.create(model="gpt-test", instructions="Use tools.", tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "requires_action" and run.usage is None
    assert run.required_action.type == "submit_tool_outputs"
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert (call.type, call.function.name, call.function.arguments) == ("function", "get_weather",
                                                                       '{"city": "Paris"}')
    assert call.id.startswith("call_")
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert (step.type, step.status) == ("tool_calls", "in_progress")
    assert step.step_details.tool_calls[0].model_dump() == {
        "id": call.id, "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}', "output": None}}
    assert client.beta.threads.messages.list(thread.id, run_id=run.id).data == []  # no text yet, no message

    first = fake.requests[0].body
    if api == "responses":
        assert first["tools"] == [{"type": "function", "name": "get_weather", "description": "The weather in a city.",
                                   "parameters": WEATHER_TOOL["function"]["parameters"], "strict": False}]
    else:
        assert first["tools"] == [WEATHER_TOOL]
    assert (first["tool_choice"], first["parallel_tool_calls"]) == ("auto", True)

    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": '{"sky": "clear"}'}],
        poll_interval_ms=20)
    assert done.status == "completed" and done.required_action is None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (13 + 30, 5 + 4)
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert reply.content[0].text.value == "Sunny in Paris."
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert steps[0].step_details.tool_calls[0].function.output == '{"sky": "clear"}'

    second = _sent_messages(api, fake.requests[1].body)
    if api == "responses":
        assert second == [{"role": "user", "content": "Weather in Paris?"},
                          {"type": "function_call", "call_id": call.id, "name": "get_weather",
                           "arguments": '{"city": "Paris"}'},
                          {"type": "function_call_output", "call_id": call.id, "output": '{"sky": "clear"}'}]
    else:
        assert second == [{"role": "system", "content": "Use tools."},
                          {"role": "user", "content": "Weather in Paris?"},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": call.id, "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                          {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}]


def test_parallel_calls_then_another_round(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Oslo"}'), ("get_time", '{"city": "Oslo"}')], text=["Checking. "]),
                Calls([("get_weather", '{"city": "Rome"}')]),
                Text(["Oslo is cold; ", "Rome is warm."]))
    assistant = client.beta.assistants.create(model="gpt-test", tools=[WEATHER_TOOL, TIME_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Oslo and Rome?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   parallel_tool_calls=True, poll_interval_ms=20)
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}'),
                                                                        ("get_time", '{"city": "Oslo"}')]
    assert len({c.id for c in calls}) == 2
    # The text before the calls is a completed message of the run.
    [before] = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert (before.status, before.content[0].text.value) == ("completed", "Checking. ")

    with pytest.raises(openai.BadRequestError) as info:  # every call needs its output
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                     tool_outputs=[{"tool_call_id": calls[0].id, "output": "-5"}])
    assert info.value.body["message"] == (f"Expected tool outputs for call_ids {[c.id for c in calls]}, "
                                          f"got {[calls[0].id]}.")
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                     tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}])
    assert info.value.param == "tool_outputs[0].tool_call_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                     tool_outputs=[{"tool_call_id": calls[0].id}])
    assert info.value.param == "tool_outputs[0].output"

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=20,
        tool_outputs=[{"tool_call_id": calls[1].id, "output": "09:00"}, {"tool_call_id": calls[0].id, "output": "-5"}])
    assert run.status == "requires_action"
    [again] = run.required_action.submit_tool_outputs.tool_calls
    assert again.function.arguments == '{"city": "Rome"}'
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": again.id, "output": "24"}],
        poll_interval_ms=20)
    assert run.status == "completed"
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(thread.id, order="asc").data]
    assert texts == ["Oslo and Rome?", "Checking. ", "Oslo is cold; Rome is warm."]
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (13 + 13 + 11, 5 + 5 + 7)

    third = _sent_messages(api, fake.requests[2].body)
    first_ids = [c.id for c in calls]
    if api == "responses":
        assert third == [
            {"role": "user", "content": "Oslo and Rome?"},
            {"role": "assistant", "content": "Checking. "},
            {"type": "function_call", "call_id": first_ids[0], "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            {"type": "function_call", "call_id": first_ids[1], "name": "get_time", "arguments": '{"city": "Oslo"}'},
            {"type": "function_call_output", "call_id": first_ids[0], "output": "-5"},
            {"type": "function_call_output", "call_id": first_ids[1], "output": "09:00"},
            {"type": "function_call", "call_id": again.id, "name": "get_weather", "arguments": '{"city": "Rome"}'},
            {"type": "function_call_output", "call_id": again.id, "output": "24"},
        ]
    else:
        assert third == [
            {"role": "user", "content": "Oslo and Rome?"},
            {"role": "assistant", "content": "Checking. "},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": first_ids[0], "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                {"id": first_ids[1], "type": "function",
                 "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": first_ids[0], "content": "-5"},
            {"role": "tool", "tool_call_id": first_ids[1], "content": "09:00"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": again.id, "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": again.id, "content": "24"},
        ]


def test_streamed_requires_action_and_streamed_submit(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Lima"}')]), Text(["Warm ", "in Lima."]))
    assistant = client.beta.assistants.create(model="gpt-test", tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    class Handler(openai.AssistantEventHandler):
        def __init__(self) -> None:
            super().__init__()
            self.created, self.done = [], []

        def on_tool_call_created(self, tool_call) -> None:
            self.created.append(tool_call.function.name)

        def on_tool_call_done(self, tool_call) -> None:
            self.done.append((tool_call.function.name, tool_call.function.arguments))

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         event_handler=Handler()) as stream:
        names = [event.event for event in stream]
        run = stream.current_run
    # The SDK's tool-call callbacks fire, from the step delta, as they do against OpenAI.
    assert (stream.created, stream.done) == (["get_weather"], [("get_weather", '{"city": "Lima"}')])
    assert names == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                     "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta",
                     "thread.run.requires_action"]
    assert run.status == "requires_action"
    [call] = run.required_action.submit_tool_outputs.tool_calls

    with client.beta.threads.runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "31C"}]) as stream:
        events = [(event.event, event.data) for event in stream]
        final = stream.get_final_run()
    names = [name for name, _ in events]
    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-3:] == ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]
    deltas = [data.delta.content[0].text.value for name, data in events if name == "thread.message.delta"]
    assert deltas == ["Warm ", "in Lima."] and final.status == "completed"
    assert events[0][1].step_details.tool_calls[0].function.output == "31C"


def test_submit_outside_requires_action_is_refused(api, fake, client):
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "completed"
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                     tool_outputs=[{"tool_call_id": "call_x", "output": "1"}])
    assert info.value.body["message"] == 'Runs in status "completed" do not accept tool outputs.'


def test_cancel_while_waiting_for_tool_outputs(api, fake, client):
    fake.script(Calls([("get_weather", '{"city": "Kyiv"}')]))
    assistant = client.beta.assistants.create(model="gpt-test", tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Kyiv?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert (cancelled.status, cancelled.required_action) == ("cancelled", None)
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert step.status == "cancelled"
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")


@pytest.mark.parametrize(("replies", "requests", "code", "message"), [
    ([Status(429, "Slow down.")] * 3, 3, "rate_limit_exceeded", "The upstream model is rate limited: Slow down."),
    ([Status(500, "Boom.")] * 3, 3, "server_error", "The upstream model answered 500: Boom."),
    ([Status(400, "Unsupported model.")], 1, "server_error", "The upstream model answered 400: Unsupported model."),
    ([Refusal("I cannot help with that.")], 1, "invalid_prompt", "The model refused: I cannot help with that."),
])
def test_upstream_errors_fail_the_run_after_the_sdk_retries(api, fake, client, replies, requests, code, message):
    fake.script(*replies)
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert (run.status, run.last_error.code, run.last_error.message) == ("failed", code, message)
    assert run.failed_at is not None and run.completed_at is None
    assert len(fake.requests) == requests  # the SDK's retries (BETAASSI_UPSTREAM_MAX_RETRIES=2) reached the fake
    assert fake.requests[0].body == fake.requests[-1].body
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.status, reply.incomplete_details.reason) == ("incomplete", "run_failed")
    # The reply's step failed with the run's error; a step's code has no invalid_prompt (the specification's
    # RunStepObject), so a refusal's step says server_error. Listing the steps validates them.
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert (step.status, step.last_error.model_dump()) == ("failed", {
        "code": "server_error" if code == "invalid_prompt" else code, "message": message})
    client.beta.threads.messages.create(thread.id, role="user", content="the thread is free")


def test_a_retried_error_that_clears_completes_the_run(api, fake, client):
    fake.script(Status(500), Status(429), Text(["fine"]))
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.status == "completed" and len(fake.requests) == 3
    assert client.beta.threads.messages.list(thread.id, run_id=run.id).data[0].content[0].text.value == "fine"


def test_an_upstream_timeout_fails_the_run(api, fake, client, settings):
    settings.BETAASSI_UPSTREAM_TIMEOUT = 0.3
    settings.BETAASSI_UPSTREAM_MAX_RETRIES = 1
    fake.script(Hang(2), Hang(2))
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert (run.status, run.last_error.code) == ("failed", "server_error")
    assert run.last_error.message == "The upstream model did not answer in time."
    assert len(fake.requests) == 2


def test_cancel_mid_stream_closes_the_upstream_stream(api, fake, client):
    fake.script(Text([f"w{n} " for n in range(400)], delay=0.01))
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "long"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        names = cancel_after_deltas(client, stream, thread.id, 3)
    assert names[-3:] == ["thread.message.incomplete", "thread.run.step.cancelled", "thread.run.cancelled"]
    assert names.count("thread.message.delta") < 100
    deadline = time.monotonic() + 5
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1  # the engine closed the upstream response, the fake saw it go
    reply = client.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert reply.status == "incomplete" and reply.content[0].text.value.startswith("w0 w1 w2 ")


def test_the_fake_refuses_a_request_off_the_specification(fake):
    """The fake's request check is real: a body the specification forbids is a 400 and a recorded violation."""
    upstream = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        upstream.responses.create(model="m", input="hi", temperature=7)
    assert len(fake.violations) == 1 and "temperature" in fake.violations[0]
    fake.violations.clear()


def test_the_fake_speaks_both_wire_formats_without_streaming(fake):
    """Non-streamed answers, parsed by the SDK's own types (the product always streams)."""
    upstream = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    fake.script(Calls([("get_weather", '{"city": "Oslo"}')], text=["Let me check."]), Text(["Hi", "!"]))
    response = upstream.responses.create(model="m", input="weather?", tools=[{
        "type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"],
        "strict": False}])
    assert response.output_text == "Let me check."
    assert [(o.type, getattr(o, "name", None)) for o in response.output] == [("message", None),
                                                                            ("function_call", "get_weather")]
    completion = upstream.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hi!" and completion.usage.total_tokens == 18
    assert fake.requests[1].body["messages"] == [{"role": "user", "content": "hi"}]


def test_cancel_while_the_model_has_not_answered_yet(api, fake, client):
    """A cancel is noticed while the responder waits for the model's first token, not only between deltas."""
    fake.script(Text(["too ", "late"], first_delay=3))
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "think hard"}])
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    while client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued" or not fake.requests:
        time.sleep(0.01)
    started = time.monotonic()
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    cancelled = wait_for_run(client, thread.id, run.id)
    assert cancelled.status == "cancelled"
    assert time.monotonic() - started < 1.5  # the fake's first token was 3 s away
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.status, reply.content) == ("incomplete", [])


@pytest.mark.parametrize(("code", "expected"), [("rate_limit_exceeded", "rate_limit_exceeded"),
                                                ("vector_store_timeout", "server_error")])
def test_a_response_that_fails_mid_stream_fails_the_run(settings, fake, client, code, expected):
    settings.BETAASSI_RESPONDER = "openai"
    settings.BETAASSI_UPSTREAM_BASE_URL = fake.base_url
    fake.script(Failed(code, "The model stopped.", deltas=["Half ", "an "]))
    assistant = client.beta.assistants.create(model="gpt-test")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        names = [event.event for event in stream]
        run = stream.current_run
    assert names.count("thread.message.delta") == 2
    assert names[-3:] == ["thread.message.incomplete", "thread.run.step.failed", "thread.run.failed"]
    assert (run.status, run.last_error.code, run.last_error.message) == (
        "failed", expected, "The upstream model failed: The model stopped.")
    reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    assert (reply.status, reply.content[0].text.value) == ("incomplete", "Half an ")
    assert len(fake.requests) == 1  # a failed response is the model's answer: the SDK does not retry it
