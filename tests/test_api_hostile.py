"""Hostile bodies, queries and ids: each is a 400 (or 404) naming what is wrong, never a 500.

Every case is sent as raw bytes (so ``NaN``, ``1e309`` and ``"\\ud800"`` reach
the server as written) through the in-process transport and over HTTP to
daphne, and every response is validated against the specification. The limits
themselves are in ``betaassi_django.assistants_api.limits``.
"""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from betaassi_django.assistants_api.transport import InProcessTransport
from betaassi_django.client import tls_context
from tests.conftest import wait_for_run
from tests.spec import ValidatingTransport

pytestmark = pytest.mark.django_db(transaction=True)

DEEP_MESSAGE = "The request body is nested too deeply: at most 64 levels of arrays and objects are accepted."


def raw_client(kind: str, server=None) -> httpx2.Client:
    """httpx2 on the API, with bodies sent exactly as given and every response checked against the spec."""
    if kind == "http":
        transport, base_url = httpx2.HTTPTransport(verify=tls_context()), server.base_url
        headers = {"Authorization": f"Bearer {server.api_key}"}
    else:
        transport, base_url, headers = InProcessTransport(), "http://embedded.betaassi.invalid/v1", {}
    headers["Content-Type"] = "application/json"
    return httpx2.Client(transport=ValidatingTransport(transport, kind), base_url=base_url, headers=headers,
                         timeout=60)


@pytest.fixture(params=["in_process", "http"])
def api(request) -> httpx2.Client:
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    with raw_client(request.param, server) as client:
        yield client


def _created(api: httpx2.Client, path: str, body: dict) -> dict:
    response = api.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: httpx2.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def _refused(api: httpx2.Client, path: str, raw: str | bytes) -> dict:
    return _error(api.post(path, content=raw.encode() if isinstance(raw, str) else raw))


def wait_for_run_raw(api: httpx2.Client, thread_id: str, run_id: str) -> dict:
    """The run (as JSON) once it has left queued / in_progress / cancelling."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = api.get(f"/threads/{thread_id}/runs/{run_id}").json()
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} still {run['status']}")


# Nesting -----------------------------------------------------------------------------------------------------


def _nested(depth: int, kind: str) -> str:
    """``depth`` levels of arrays or objects (the body object is one of them, when it is the container)."""
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_bodies_are_400_before_parsing(api, depth, shape):
    assistant = _created(api, "/assistants", {"model": "m"})
    bodies = {
        "/assistants": _nested(depth, shape),
        f"/assistants/{assistant['id']}": '{"tools":[{"type":"function","function":{"name":"f","parameters":'
                                          + _nested(depth, "object") + "}}]}",
        "/threads": '{"metadata":' + _nested(depth - 1, shape) + "}",
        "/threads/runs": '{"assistant_id":"' + assistant["id"] + '","thread":{"messages":' + _nested(depth, shape)
                         + "}}",
    }
    for path, raw in bodies.items():
        error = _refused(api, path, raw)
        assert (error["message"], error["param"], error["code"]) == (DEEP_MESSAGE, None, "nesting_too_deep"), path


def test_64_levels_are_accepted_and_kept(api):
    # body{} tools[] {} function{} parameters{} + 59 more levels = 64
    parameters = json.loads(_nested(60, "object"))
    body = {"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}
    assistant = _created(api, "/assistants", body)
    assert assistant["tools"][0]["function"]["parameters"] == parameters
    deeper = json.dumps({**body, "tools": [{"type": "function", "function": {"name": "f",
                                                                               "parameters": {"b": parameters}}}]})
    assert _refused(api, "/assistants", deeper)["code"] == "nesting_too_deep"


def test_brackets_inside_strings_do_not_count(api):
    text = "[" * 5000 + '{"\\"' + "}" * 10
    assistant = _created(api, "/assistants", {"model": "m", "instructions": text, "metadata": {"k": "[[[[" * 100}})
    assert assistant["instructions"] == text


# Strings no store can keep -----------------------------------------------------------------------------------

SURROGATES = ["\\ud800", "a\\udfffb", "\\ud83d", "\\udc00\\ud800", "x\\ud83dy"]


def _surrogate_cases(assistant_id: str, thread_id: str, message_id: str, run_id: str, bad: str):
    """(path, raw body, param) for every stored string a client can send."""
    s = f'"{bad}"'
    run = f"/threads/{thread_id}/runs/{run_id}"
    return [
        ("/assistants", '{"model":"m","metadata":{"team":' + s + "}}", "metadata.team"),
        ("/assistants", '{"model":"m","metadata":{' + s + ':"v"}}', "metadata"),
        ("/assistants", '{"model":' + s + "}", "model"),
        ("/assistants", '{"model":"m","name":' + s + "}", "name"),
        ("/assistants", '{"model":"m","description":' + s + "}", "description"),
        ("/assistants", '{"model":"m","instructions":' + s + "}", "instructions"),
        ("/assistants", '{"model":"m","tools":[{"type":"function","function":{"name":' + s + "}}]}",
         "tools[0].function.name"),
        ("/assistants", '{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"p":{'
         + s + ':1}}}}]}', "tools[0].function.parameters.p"),
        (f"/assistants/{assistant_id}", '{"instructions":' + s + "}", "instructions"),
        ("/threads", '{"messages":[{"role":"user","content":' + s + "}]}", "messages[0].content"),
        ("/threads", '{"messages":[{"role":"user","content":[{"type":"text","text":' + s + "}]}]}",
         "messages[0].content[0].text"),
        ("/threads", '{"metadata":{"team":' + s + "}}", "metadata.team"),
        (f"/threads/{thread_id}", '{"metadata":{"team":' + s + "}}", "metadata.team"),
        (f"/threads/{thread_id}/messages", '{"role":"user","content":' + s + "}", "content"),
        (f"/threads/{thread_id}/messages/{message_id}", '{"metadata":{"team":' + s + "}}", "metadata.team"),
        (f"/threads/{thread_id}/runs", '{"assistant_id":"' + assistant_id + '","additional_instructions":' + s
         + "}", "additional_instructions"),
        (f"/threads/{thread_id}/runs", '{"assistant_id":' + s + "}", "assistant_id"),
        ("/threads/runs", '{"assistant_id":"' + assistant_id + '","thread":{"messages":[{"role":"user",'
         '"content":"hi","metadata":{"team":' + s + "}}]}}", "thread.messages[0].metadata.team"),
        (run, '{"metadata":{"team":' + s + "}}", "metadata.team"),
        (f"{run}/submit_tool_outputs", '{"tool_outputs":[{"tool_call_id":"call_1","output":' + s + "}]}",
         "tool_outputs[0].output"),
    ]


@pytest.mark.parametrize("bad", SURROGATES)
def test_lone_surrogates_are_400_naming_the_field(api, bad):
    assistant = _created(api, "/assistants", {"model": "m"})
    thread = _created(api, "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    message = api.get(f"/threads/{thread['id']}/messages").json()["data"][0]
    run = _created(api, f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    wait_for_run_raw(api, thread["id"], run["id"])
    messages = api.get(f"/threads/{thread['id']}/messages").json()["data"]
    assistants = api.get("/assistants", params={"limit": 100}).json()["data"]
    first = next(c for c in json.loads(f'"{bad}"') if 0xD800 <= ord(c) <= 0xDFFF)
    for path, raw, param in _surrogate_cases(assistant["id"], thread["id"], message["id"], run["id"], bad):
        error = _refused(api, path, raw)
        assert (error["param"], error["code"], error["message"]) == (
            param, "invalid_value", f"Invalid value for '{param}': the string holds a lone surrogate "
                                    f"(\\u{ord(first):04x}), which is not valid Unicode."), (path, raw)
    assert api.get(f"/assistants/{assistant['id']}").json()["instructions"] is None
    assert api.get(f"/threads/{thread['id']}/messages").json()["data"] == messages
    assert api.get("/assistants", params={"limit": 100}).json()["data"] == assistants


def test_surrogate_pairs_and_other_unicode_are_kept(api):
    text = "emoji \U0001f600 cjk 漢字 rtl \u05d0 combining e\u0301 bmp-end \uffff"
    raw = json.dumps({"model": "m", "name": "\U0001f600", "instructions": text, "metadata": {"k\U0001f600": text[:60]}})
    assert "\\ud83d\\ude00" in raw  # sent as an escaped pair, which is valid
    assistant = _created(api, "/assistants", json.loads(raw))
    stored = api.get(f"/assistants/{assistant['id']}").json()
    assert (stored["name"], stored["instructions"], stored["metadata"]) == ("\U0001f600", text,
                                                                           {"k\U0001f600": text[:60]})


def test_null_characters_are_400(api):
    error = _refused(api, "/assistants", '{"model":"m","metadata":{"team":"a\\u0000b"}}')
    assert error == {"message": "Invalid value for 'metadata.team': null characters are not allowed.",
                     "type": "invalid_request_error", "param": "metadata.team", "code": "invalid_value"}


# Numbers -----------------------------------------------------------------------------------------------------

INT32, INT64 = 2**31 - 1, 2**63 - 1


def _above(param: str, bound: int, value) -> tuple[str, str, str]:
    return (param, "integer_above_max_value",
            f"Invalid '{param}': integer above maximum value. Expected a value <= {bound}, but got {value} instead.")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ('"max_prompt_tokens":9223372036854775808', _above("max_prompt_tokens", INT32, 2**63)),
        ('"max_prompt_tokens":2147483648', _above("max_prompt_tokens", INT32, 2**31)),
        ('"max_completion_tokens":1180591620717411303424', _above("max_completion_tokens", INT32, 2**70)),
        ('"max_completion_tokens":255', ("max_completion_tokens", "integer_below_min_value",
                                         "Invalid 'max_completion_tokens': integer below minimum value. "
                                         "Expected a value >= 256, but got 255 instead.")),
        ('"truncation_strategy":{"type":"last_messages","last_messages":1180591620717411303424}',
         _above("truncation_strategy.last_messages", INT32, 2**70)),
        ('"truncation_strategy":{"type":"last_messages","last_messages":0}',
         ("truncation_strategy.last_messages", "integer_below_min_value",
          "Invalid 'truncation_strategy.last_messages': integer below minimum value. Expected a value >= 1, "
          "but got 0 instead.")),
        ('"temperature":NaN', ("temperature", "invalid_value", "Invalid value for 'temperature': numbers must be "
                                                              "finite (at most about 1.8e308 in magnitude), but got "
                                                              "nan instead.")),
        ('"top_p":-Infinity', ("top_p", "decimal_below_min_value", "Invalid 'top_p': decimal below minimum value. "
                                                                   "Expected a value >= 0, but got -inf instead.")),
        ('"temperature":1e309', ("temperature", "decimal_above_max_value", "Invalid 'temperature': decimal above "
                                                                          "maximum value. Expected a value <= 2, but "
                                                                          "got inf instead.")),
        ('"tools":[{"type":"function","function":{"name":"f","parameters":{"maximum":9223372036854775808}}}]',
         _above("tools[0].function.parameters.maximum", INT64, 2**63)),
        ('"tools":[{"type":"function","function":{"name":"f","parameters":{"minimum":-1e309}}}]',
         ("tools[0].function.parameters.minimum", "invalid_value", "Invalid value for "
          "'tools[0].function.parameters.minimum': numbers must be finite (at most about 1.8e308 in magnitude), "
          "but got -inf instead.")),
        ('"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"x":[Infinity]}}}',
         ("response_format.json_schema.schema.x[0]", "invalid_value", "Invalid value for "
          "'response_format.json_schema.schema.x[0]': numbers must be finite (at most about 1.8e308 in "
          "magnitude), but got inf instead.")),
    ],
)
def test_numbers_out_of_range_are_400_naming_the_field(api, fields, expected):
    assistant = _created(api, "/assistants", {"model": "m"})
    thread = _created(api, "/threads", {})
    raw = '{"assistant_id":"' + assistant["id"] + '",' + fields + "}"
    for path in (f"/threads/{thread['id']}/runs", "/threads/runs"):
        error = _refused(api, path, raw)
        assert (error["param"], error["code"], error["message"]) == expected, path
    assert api.get(f"/threads/{thread['id']}/runs").json()["data"] == []


def test_numbers_in_range_are_kept(api):
    parameters = {"maximum": INT64, "minimum": -INT64 - 1, "x": 0.5, "y": [1.25, -3]}
    body = {"model": "m", "temperature": 2, "top_p": 0,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}
    assistant = _created(api, "/assistants", body)
    assert assistant["tools"][0]["function"]["parameters"] == parameters
    thread = _created(api, "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    run = _created(api, f"/threads/{thread['id']}/runs", {
        "assistant_id": assistant["id"], "max_prompt_tokens": INT32, "max_completion_tokens": 256,
        "truncation_strategy": {"type": "last_messages", "last_messages": INT32}})
    assert (run["max_prompt_tokens"], run["truncation_strategy"]["last_messages"]) == (INT32, INT32)
    assert wait_for_run_raw(api, thread["id"], run["id"])["status"] == "completed"


def test_last_messages_beyond_the_cap_is_400_and_the_thread_takes_the_next_run(client):
    """2**70 used to be accepted, then crash the engine, leaving the run queued and its thread locked."""
    import openai

    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(3)])
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id,
                                        truncation_strategy={"type": "last_messages", "last_messages": 2**70})
    assert info.value.body["param"] == "truncation_strategy.last_messages"
    assert info.value.body["code"] == "integer_above_max_value"
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id,
                                          truncation_strategy={"type": "last_messages", "last_messages": 10**6})
    run = wait_for_run(client, thread.id, run.id)
    assert run.status == "completed" and run.truncation_strategy.last_messages == 10**6
    reply = client.beta.threads.messages.list(thread_id=thread.id, limit=1).data[0]
    assert reply.content[0].text.value == "echo: m2 [context=3]"


# Counts and lengths ------------------------------------------------------------------------------------------


def _too_long(param: str, bound: int, got: int) -> tuple[str, str, str]:
    return (param, "array_above_max_length", f"Invalid '{param}': array too long. Expected an array with maximum "
                                             f"length {bound}, but got an array with length {got} instead.")


def test_counts_beyond_the_bounds_are_400(api):
    assistant = _created(api, "/assistants", {"model": "m"})
    thread = _created(api, "/threads", {})
    message = {"role": "user", "content": "x"}
    part = {"type": "text", "text": "x"}
    attachment = {"file_id": "file_1", "tools": [{"type": "code_interpreter"}]}
    cases = [
        ("/threads", {"messages": [message] * 1001}, _too_long("messages", 1000, 1001)),
        (f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"], "additional_messages": [message] * 1001},
         _too_long("additional_messages", 1000, 1001)),
        (f"/threads/{thread['id']}/messages", {"role": "user", "content": [part] * 101},
         _too_long("content", 100, 101)),
        (f"/threads/{thread['id']}/messages", {"role": "user", "content": "x", "attachments": [attachment] * 21},
         _too_long("attachments", 20, 21)),
        (f"/threads/{thread['id']}/messages",
         {"role": "user", "content": "x", "attachments": [{"file_id": "f", "tools": [{"type": "file_search"}] * 9}]},
         _too_long("attachments[0].tools", 8, 9)),
        (f"/threads/{thread['id']}/runs/run_x/submit_tool_outputs",
         {"tool_outputs": [{"tool_call_id": "c", "output": "o"}] * 1001}, _too_long("tool_outputs", 1000, 1001)),
        ("/assistants", {"model": "m", "tools": [{"type": "code_interpreter"}] * 129}, _too_long("tools", 128, 129)),
        ("/assistants", {"model": "m" * 257}, ("model", "string_above_max_length", "Invalid 'model': string too "
                                                "long. Expected a string with maximum length 256, but got a string "
                                                "with length 257 instead.")),
        ("/threads/runs", {"assistant_id": assistant["id"], "model": "m" * 257},
         ("model", "string_above_max_length", "Invalid 'model': string too long. Expected a string with maximum "
                                              "length 256, but got a string with length 257 instead.")),
    ]
    for path, body, expected in cases:
        error = _error(api.post(path, json=body))
        assert (error["param"], error["code"], error["message"]) == expected, path


def test_counts_at_the_bounds_are_accepted(api):
    thread = _created(api, "/threads", {"messages": [{"role": "user", "content": str(i)} for i in range(1000)]})
    page = api.get(f"/threads/{thread['id']}/messages", params={"limit": 100, "order": "asc"}).json()
    assert [m["content"][0]["text"]["value"] for m in page["data"]] == [str(i) for i in range(100)]
    upload = api.build_request("POST", "/files", files={"file": ("f.txt", b"f")}, data={"purpose": "assistants"})
    upload.headers["Content-Type"] = upload.stream.content_type  # not the client's JSON default
    file_id = api.send(upload).json()["id"]  # attachments name a real file (an unknown one is a 400)
    message = _created(api, f"/threads/{thread['id']}/messages", {
        "role": "user", "content": [{"type": "text", "text": "p"}] * 100,
        "attachments": [{"file_id": file_id, "tools": [{"type": "file_search"}] * 8}] * 20})
    assert len(message["content"]) == 100 and len(message["attachments"]) == 20
    assert _created(api, "/assistants", {"model": "m" * 256})["model"] == "m" * 256


# Queries and ids ---------------------------------------------------------------------------------------------

BAD_IDS = ["x" * 5000, "é", "%00", "%ED%A0%80", "thread_%F0%9F%98%80", "asst_" + "9" * 60, "a%20b", "%25"]


@pytest.mark.parametrize("raw_id", BAD_IDS)
def test_adversarial_ids_in_paths_are_404(api, raw_id):
    thread = _created(api, "/threads", {})
    for path, kind in [
        (f"/assistants/{raw_id}", "assistant"),
        (f"/threads/{raw_id}", "thread"),
        (f"/threads/{raw_id}/messages", "thread"),
        (f"/threads/{thread['id']}/messages/{raw_id}", "message"),
        (f"/threads/{thread['id']}/runs/{raw_id}", "run"),
        (f"/threads/{thread['id']}/runs/{raw_id}/steps", "run"),
    ]:
        for method in ("GET", "DELETE") if path.count("/") == 2 else ("GET",):
            error = _error(api.request(method, path), 404)
            assert error["message"].startswith(f"No {kind} found with id '"), (method, path, error)
            assert error["param"] is None


@pytest.mark.parametrize("cursor", ["x" * 10000, "é", "\x00", "asst_" + "9" * 60, "' OR 1=1 --", "asst_nope"])
def test_adversarial_cursors_are_400(api, cursor):
    _created(api, "/assistants", {"model": "m"})
    for name in ("after", "before"):
        error = _error(api.get("/assistants", params={name: cursor}))
        assert (error["param"], error["code"]) == (name, "invalid_cursor")
        assert error["message"].startswith(f"Invalid '{name}': no object with id '")


def test_encoded_surrogates_in_a_query_are_400(api):
    error = _error(api.get("/assistants?after=%ED%A0%80"))
    assert (error["param"], error["code"]) == ("after", "invalid_cursor")


def test_a_run_id_filter_that_is_no_id_lists_nothing(api):
    thread = _created(api, "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    for run_id in ("\x00", "x" * 10000, "é"):
        page = api.get(f"/threads/{thread['id']}/messages", params={"run_id": run_id})
        assert page.status_code == 200 and page.json()["data"] == []


@pytest.mark.parametrize(
    ("limit", "code", "message"),
    [
        ("abc", "invalid_type", "Invalid type for 'limit': expected an integer, but got 'abc' instead."),
        ("1e3", "invalid_type", "Invalid type for 'limit': expected an integer, but got '1e3' instead."),
        ("\u0663", "invalid_type", "Invalid type for 'limit': expected an integer, but got '\u0663' instead."),
        (" 5", "invalid_type", "Invalid type for 'limit': expected an integer, but got ' 5' instead."),
        ("9" * 5000, "invalid_type",
         f"Invalid type for 'limit': expected an integer, but got '{'9' * 50}' instead."),
        ("9" * 30, "integer_above_max_value",
         f"Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {'9' * 30} instead."),
        ("-1", "integer_below_min_value",
         "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got -1 instead."),
    ],
)
def test_bad_limits_are_400(api, limit, code, message):
    error = _error(api.get("/assistants", params={"limit": limit}))
    assert (error["param"], error["code"], error["message"]) == ("limit", code, message)


def test_too_many_query_parameters_is_400(api):
    query = "&".join(f"p{i}=1" for i in range(1001))
    error = _error(api.get(f"/assistants?{query}"))
    assert error == {"message": "The query string has more than the 1000 parameters this server accepts.",
                     "type": "invalid_request_error", "param": None, "code": "too_many_parameters"}


def test_a_real_failure_stays_a_500_in_openais_shape():
    """A broken database is a server error (a real 500), answered as JSON like every other error."""
    from django.db import connection

    def rename(old: str, new: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")

    with raw_client("in_process") as api:
        assert api.get("/assistants").status_code == 200
        rename("assistants_api_assistant", "assistants_api_assistant_away")
        try:
            response = api.get("/assistants")
        finally:
            rename("assistants_api_assistant_away", "assistants_api_assistant")
        assert api.get("/assistants").status_code == 200
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"message": "The server had an error while processing your request. Sorry "
                                                    "about that!", "type": "server_error", "param": None,
                                         "code": None}}
