"""Run options with the echo responder, through the SDK (in-process and over HTTP, every response and event
validated): ``response_format`` JSON, ``max_prompt_tokens`` truncation, ``max_completion_tokens`` ending the run
``incomplete``, ``tool_choice`` naming a function the run does not have."""

from __future__ import annotations

import json

import openai
import pytest

from betaassi_django.assistants_api import run_options, tokens
from betaassi_django.assistants_api.responders.interface import ContextMessage, ToolCall, ToolRound
from tests.conftest import wait_for_run
from tests.test_api_runs import EXPECTED_PREFIX

APPLES = " ".join(["apple"] * 100)  # 100 tokens, 100 echo words
LONG = " ".join(f"w{i}" for i in range(300))  # 300 echo words (and deltas)
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
INCOMPLETE_SUFFIX = ["thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"]


def _thread(client, *texts: str, instructions: str = "Repeat.", **assistant):
    created = client.beta.assistants.create(model="echo-1", instructions=instructions, **assistant)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": t} for t in texts])
    return created, thread


def _reply(client, thread_id: str, run_id: str):
    [message] = client.beta.threads.messages.list(thread_id, run_id=run_id).data
    return message


def test_the_counts_the_tests_rely_on():
    assert (tokens.count(APPLES), tokens.count("Repeat.")) == (100, 2)
    # instructions 2 + 3, each message 100 + 3, the reply's priming 3
    assert run_options.entry_tokens("Repeat.") == 5 and run_options.entry_tokens(ContextMessage("user", APPLES)) == 103
    assert run_options.fit("", [], [], 256) == ([], True)
    assert run_options.fit("Repeat.", [], [], 7) == ([], False)
    # the bound that spares the tokenizer never counts less than it
    round_ = ToolRound([ToolCall("call_1", "get_weather", '{"city": "Paris"}', "14C"),
                        ToolCall("call_2", "get_weather", '{"city": "Lima"}', "20C")])
    messages = [ContextMessage("user", "caf\u00e9 \u4e2d\u6587 " * 50), ContextMessage("assistant", APPLES)]
    exact = (run_options.REPLY_PRIMING + run_options.entry_tokens("Repeat.") + run_options.entry_tokens(round_)
             + sum(run_options.entry_tokens(m) for m in messages))
    assert run_options._bound("Repeat.", messages, [round_]) >= exact
    for limit in (exact - 1, exact):  # at the exact count the prompt fits, one under it does not
        assert run_options.fit("Repeat.", messages, [round_], limit)[0] == (messages if limit == exact
                                                                           else messages[1:])


@pytest.mark.parametrize("response_format", [{"type": "json_object"},
                                             {"type": "json_schema", "json_schema": {
                                                 "name": "echo", "strict": True, "schema": {
                                                     "type": "object", "additionalProperties": False,
                                                     "properties": {"echo": {"type": "string"},
                                                                    "context": {"type": "integer"}},
                                                     "required": ["echo", "context"]}}}])
def test_json_formats_make_echo_reply_json(client, response_format):
    assistant, thread = _thread(client, "first", 'say "hi" \u00e9')
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, response_format=response_format)
    assert run.response_format.model_dump(exclude_none=True, by_alias=True) == response_format
    assert wait_for_run(client, thread.id, run.id).status == "completed"
    text = _reply(client, thread.id, run.id).content[0].text.value
    assert text == '{"echo": "say \\"hi\\" \u00e9", "context": 2}'
    assert json.loads(text) == {"echo": 'say "hi" \u00e9', "context": 2}


def test_the_assistants_response_format_applies_unless_the_run_sets_one(client):
    assistant, thread = _thread(client, "hello there", response_format={"type": "json_object"})
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert run.response_format.type == "json_object"
    assert _reply(client, thread.id, run.id).content[0].text.value == '{"echo": "hello there", "context": 1}'
    for response_format in ({"type": "text"}, "auto"):
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       response_format=response_format, poll_interval_ms=20)
        assert _reply(client, thread.id, run.id).content[0].text.value.startswith("echo: hello there [context=")


@pytest.mark.parametrize(("limit", "kept"), [(316, 2), (317, 3), (419, 3), (420, 4)])
def test_max_prompt_tokens_leaves_out_the_oldest_messages(client, limit, kept):
    """8 tokens of instructions and priming, 103 a message: 8 + 3 * 103 = 317 fits three, 420 all four."""
    assistant, thread = _thread(client, *(f"{APPLES}" for _ in range(3)), "apple " * 99 + "pear")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_prompt_tokens=limit, poll_interval_ms=20)
    assert (run.status, run.max_prompt_tokens, run.incomplete_details) == ("completed", limit, None)
    text = _reply(client, thread.id, run.id).content[0].text.value
    assert text == f"echo: {'apple ' * 99}pear [context={kept}]"
    # echo counts words: "Repeat." and 100 words a message it was given
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (1 + 100 * kept, 102)


@pytest.mark.parametrize(("instructions", "message"), [("Repeat.", " ".join(["apple"] * 300)),
                                                      (" ".join(["apple"] * 300), "hi")])
def test_a_prompt_that_cannot_fit_ends_the_run_incomplete(client, instructions, message):
    assistant, thread = _thread(client, message, instructions=instructions)
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         max_prompt_tokens=256) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
    assert names == EXPECTED_PREFIX + INCOMPLETE_SUFFIX
    assert (run.status, run.incomplete_details.reason) == ("incomplete", "max_prompt_tokens")
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (0, 0, 0)
    assert (run.completed_at, run.failed_at, run.last_error) == (None, None, None)
    reply = _reply(client, thread.id, run.id)
    assert (reply.status, reply.incomplete_details.reason, reply.content) == ("incomplete", "max_tokens", [])
    assert reply.incomplete_at is not None
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert (step.status, step.usage.total_tokens) == ("completed", 0)
    # the thread takes its next run
    nxt = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    assert nxt.status == "completed"


def test_max_completion_tokens_cuts_the_reply_and_ends_the_run_incomplete(client):
    assistant, thread = _thread(client, LONG)
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         max_completion_tokens=256) as stream:
        events = [(event.event, event.data) for event in stream]
        run = stream.get_final_run()
    names = [name for name, _ in events]
    assert names == EXPECTED_PREFIX + ["thread.message.delta"] * 256 + INCOMPLETE_SUFFIX
    expected = "echo: " + " ".join(f"w{i}" for i in range(255)) + " "
    assert "".join(d.delta.content[0].text.value for n, d in events if n == "thread.message.delta") == expected
    incomplete = dict(events)["thread.message.incomplete"]
    assert (incomplete.status, incomplete.incomplete_details.reason) == ("incomplete", "max_tokens")
    assert (run.status, run.incomplete_details.reason, run.max_completion_tokens) == (
        "incomplete", "max_completion_tokens", 256)
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (301, 256, 557)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).model_dump() == run.model_dump()
    reply = _reply(client, thread.id, run.id)
    assert (reply.status, reply.content[0].text.value) == ("incomplete", expected)


def test_a_reply_within_max_completion_tokens_completes(client):
    assistant, thread = _thread(client, "hello there")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_completion_tokens=256, max_prompt_tokens=256,
                                                   poll_interval_ms=20)
    assert (run.status, run.incomplete_details, run.usage.total_tokens) == ("completed", None, 7)


def test_tool_choice_naming_a_function_the_run_lacks_is_400(client):
    assistant, thread = _thread(client, "hi", tools=[WEATHER_TOOL])
    for tools, name in (([], "get_weather"), (None, "get_time"), (None, "x" * 300)):
        extra = {} if tools is None else {"tools": tools}
        for create in (lambda **kw: client.beta.threads.runs.create(thread.id, **kw),
                       lambda **kw: client.beta.threads.create_and_run(**kw)):
            with pytest.raises(openai.BadRequestError) as info:
                create(assistant_id=assistant.id, tool_choice={"type": "function", "function": {"name": name}},
                       **extra)
            assert (info.value.param, info.value.code) == ("tool_choice", "invalid_value")
            assert info.value.body["message"] == (f"Invalid value for 'tool_choice': function '{name[:100]}' is "
                                                  f"not among the run's tools.")
    assert client.beta.threads.runs.list(thread.id).data == []
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False)
    assert (run.status, run.tool_choice.function.name, run.parallel_tool_calls) == ("completed", "get_weather", False)


@pytest.mark.parametrize(("value", "code"), [(0, "integer_below_min_value"), (255, "integer_below_min_value"),
                                             (-1, "integer_below_min_value"), (2**40, "integer_above_max_value"),
                                             (10**39, "integer_above_max_value")])
def test_token_limits_out_of_range_are_400(client, value, code):
    assistant, thread = _thread(client, "hi")
    for param in ("max_prompt_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as info:
            client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, **{param: value})
        assert (info.value.param, info.value.code) == (param, code)
        assert str(value) in info.value.body["message"]
    assert client.beta.threads.runs.list(thread.id).data == []


@pytest.mark.parametrize(("name", "code"), [("x" * 65, "string_above_max_length"), ("bad name", "invalid_value"),
                                            ("", "invalid_value"), ("caf\u00e9", "invalid_value")])
def test_a_json_schema_name_openai_would_refuse_is_400_everywhere(client, name, code):
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": {"type": "object"}}}
    param = "response_format.json_schema.name"
    assistant, thread = _thread(client, "hi")
    attempts = [lambda: client.beta.assistants.create(model="m", response_format=fmt),
                lambda: client.beta.assistants.update(assistant.id, response_format=fmt),
                lambda: client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, response_format=fmt),
                lambda: client.beta.threads.create_and_run(assistant_id=assistant.id, response_format=fmt)]
    for attempt in attempts:
        with pytest.raises(openai.BadRequestError) as info:
            attempt()
        assert (info.value.param, info.value.code) == (param, code)
    assert client.beta.assistants.retrieve(assistant.id).response_format == "auto"
    assert client.beta.threads.runs.list(thread.id).data == []
    fmt["json_schema"]["name"] = "A-z_09" + "x" * 58  # 64: the longest name
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   response_format=fmt, poll_interval_ms=20)
    assert run.status == "completed"


def test_the_websocket_frame_of_an_incomplete_run_names_the_limit(client):
    """Sessions set neither limit today; a turn whose run ends incomplete (a class that sets one) is shown as the
    other ends are, its error naming the limit (``turns._run_failed``, the ``run.failed`` frame)."""
    from betaassi_django import turns

    assistant, thread = _thread(client, LONG)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_completion_tokens=256, poll_interval_ms=20)
    assert turns._run_failed(run) == {"type": "run.failed", "run_id": run.id, "status": "incomplete",
                                      "error": "The reply reached the run's max_completion_tokens limit."}
