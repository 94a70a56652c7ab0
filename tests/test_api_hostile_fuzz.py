"""Property-based hostile input for every /v1 operation, in-process and over HTTP: never a 5xx.

Bodies start from the specification's request schemas (``test_api_fuzz``)
and get raw JSON spliced in at random places: nesting up to 100,000 deep, lone
surrogates (as values and as keys), ``NaN``/``Infinity``/``1e309``, integers
of 2^31, 2^63, 2^70 and 400 digits, wrong types. Path ids and query values are
adversarial too (huge, unicode, percent-encoded NUL and surrogates). Every
response is 200, 400 or 404 and matches the specification; a body deeper than
64 levels (measured here by a plain reference scan) is exactly the 400
``nesting_too_deep``, and a value no store can keep is a 400 naming its field.
"""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.spec import spec
from tests.test_api_fuzz import SCHEMAS, from_schema
from tests.test_api_hostile import raw_client

HOSTILE = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.filter_too_much, HealthCheck.data_too_large])
MAX_DEPTH = 64


def _nest(depth: int, shape: str) -> str:
    return "[" * depth + "]" * depth if shape == "[" else '{"k":' * depth + "0" + "}" * depth


SURROGATES = ['"\\ud800"', '"a\\udfffb"', '"\\ud83d"', '"\\udc00\\ud800"']
#: Values no store keeps: any of them in a body must make it a 400 that names a field.
UNSTORABLE = [*SURROGATES, '"\\u0000"', "NaN", "Infinity", "-Infinity", "1e309", "-1e400", str(2**63), str(2**70),
              str(-(2**70)), "1" + "0" * 400, '{"team":"\\ud800"}', '{"\\ud800":"v"}', '["\\udfff"]']
DEEP = [_nest(65, "["), _nest(65, "{"), _nest(1000, "["), _nest(1000, "{"), _nest(100_000, "[")]
OTHER = [str(2**31), str(2**31 - 1), "-1", "0", "255", "1.5", "-0.0", "1e-400", "1e308", "{}", "[]", "true", "false",
         "null", '"x"', '""', '"\U0001f600"', _nest(20, "{"), "[" + ",".join(["1"] * 2000) + "]"]
KEYS = ["metadata", "model", "name", "instructions", "content", "role", "temperature", "top_p", "max_prompt_tokens",
        "truncation_strategy", "last_messages", "tools", "messages", "assistant_id", "tool_outputs", "output",
        "parameters", "zz_unknown"]

BAD_IDS = ["x" * 3000, "é", "%00", "%ED%A0%80", "thread_%F0%9F%98%80", "asst_" + "9" * 60, "%20", "run_'--"]
QUERY_KEYS = ["limit", "order", "after", "before", "run_id", "include[]", "purpose", "filter"]
QUERY_VALUES = ["9" * 5000, "9" * 30, "-1", "0", "1", "100", "101", "\u0663", "1e3", " 5", "\x00", "é", "x" * 3000,
                "asc", "desc", "step_details.tool_calls[*].file_search.results[*].content", "%ED%A0%80"]

OPERATIONS = sorted(
    (path, method.upper()) for path, item in spec()["paths"].items() for method in item
    if method in ("get", "post", "delete")
)


def reference_depth(raw: str) -> int:
    """The deepest nesting of arrays/objects in JSON text, by the obvious character scan (the test's oracle)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _containers(value, path=()):
    """Paths of every object and array in a decoded body (the body itself first)."""
    if isinstance(value, dict | list):
        yield path, value
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from _containers(item, (*path, key))


@st.composite
def hostile_body(draw, schema_name: str) -> tuple[str, bool]:
    """Raw JSON text of a schema-shaped body with hostile fragments spliced in; and whether one is unstorable."""
    body = draw(from_schema(SCHEMAS[schema_name]), label="body")
    if not isinstance(body, dict):
        body = {}
    fragments: dict[str, tuple[str, bool]] = {}
    for index in range(draw(st.integers(0, 3), label="injections")):
        token = f"@@hostile{index}@@"
        _, container = draw(st.sampled_from(list(_containers(body))), label="where")
        kind = draw(st.sampled_from(["unstorable", "deep", "other", "key"]), label="kind")
        pool = {"unstorable": UNSTORABLE, "deep": DEEP, "other": OTHER, "key": SURROGATES}[kind]
        fragment = draw(st.sampled_from(pool), label="fragment")
        if kind == "key" and isinstance(container, dict):
            container[token] = "v"
        elif isinstance(container, dict):
            known = sorted(container) if container and draw(st.integers(0, 3), label="known key") else KEYS
            container[draw(st.sampled_from(known), label="key")] = token
        elif container:
            container[draw(st.integers(0, len(container) - 1))] = token
        else:
            container.append(token)
        fragments[token] = fragment, kind in ("unstorable", "key")
    raw = json.dumps(body)
    # a later injection may have replaced an earlier one (or its container): only what is left counts
    unstorable = any(bad and f'"{token}"' in raw for token, (_, bad) in fragments.items())
    for token, (fragment, _) in fragments.items():
        raw = raw.replace(f'"{token}"', fragment)
    return raw, unstorable


def _new_file(api: httpx2.Client) -> str:
    """A file uploaded as the SDK uploads one (multipart; the client's JSON Content-Type replaced)."""
    body = (b'--fz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n--fz\r\n'
            b'Content-Disposition: form-data; name="file"; filename="fuzz.txt"\r\n\r\nfuzz\r\n--fz--\r\n')
    return api.post("/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=fz"}).json()["id"]


def _world(api: httpx2.Client) -> dict[str, str]:
    """One of each object, so that real ids reach the handlers' deep paths."""
    assistant = api.post("/assistants", json={"model": "fuzz"}).json()
    thread = api.post("/threads", json={"messages": [{"role": "user", "content": "fuzz"}]}).json()
    run = api.post(f"/threads/{thread['id']}/runs", json={"assistant_id": assistant["id"]}).json()
    _settle(api, [(thread["id"], run["id"])])
    message = api.get(f"/threads/{thread['id']}/messages", params={"limit": 1}).json()["data"][0]
    step = api.get(f"/threads/{thread['id']}/runs/{run['id']}/steps").json()["data"][0]
    return {"assistant_id": assistant["id"], "thread_id": thread["id"], "message_id": message["id"],
            "run_id": run["id"], "step_id": step["id"], **_new_store(api)}


def _new_store(api: httpx2.Client) -> dict[str, str]:
    """A file in a new vector store, in a batch of its own (so the store's, its files' and its batches' paths)."""
    file_id = _new_file(api)
    store = api.post("/vector_stores", json={}).json()["id"]
    batch = api.post(f"/vector_stores/{store}/file_batches", json={"file_ids": [file_id]}).json()["id"]
    return {"file_id": file_id, "vector_store_id": store, "batch_id": batch}


def _settle(api: httpx2.Client, runs: list[tuple[str, str]]) -> None:
    """Wait until the runs a test started have ended (the engine must not outlive the test's database)."""
    deadline = time.monotonic() + 30
    for thread_id, run_id in runs:
        while time.monotonic() < deadline:
            response = api.get(f"/threads/{thread_id}/runs/{run_id}")
            if response.status_code != 200 or response.json()["status"] not in ("queued", "in_progress",
                                                                                   "cancelling"):
                break
            time.sleep(0.02)


@pytest.fixture
def in_process_api():
    with raw_client("in_process") as api:
        yield api


@pytest.fixture
def in_process_world(in_process_api):
    return _world(in_process_api)


@pytest.fixture(scope="module")
def http_world(daphne_server):
    with raw_client("http", daphne_server) as api:
        yield api, _world(api)


def _request_schema(path: str, method: str) -> str | None:
    op = spec()["paths"][path][method.lower()]
    ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


@pytest.mark.slow
@pytest.mark.parametrize("kind", [pytest.param("in_process", marks=pytest.mark.django_db(transaction=True)), "http"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
@HOSTILE
@given(data=st.data())
def test_hostile_input_never_answers_5xx(request, kind, path, method, data):
    if kind == "http":
        api, world = request.getfixturevalue("http_world")
    else:
        api = request.getfixturevalue("in_process_api")
        world = request.getfixturevalue("in_process_world")
    started: list[tuple[str, str]] = []
    ids = dict(world)
    if method == "DELETE" or (path, method) == ("/threads/{thread_id}/runs", "POST"):
        # fresh objects: deleting (or starting a run on) the shared ones would starve the other examples
        ids["assistant_id"] = api.post("/assistants", json={"model": "fuzz"}).json()["id"]
        ids["thread_id"] = api.post("/threads", json={}).json()["id"]
        ids["message_id"] = api.post(f"/threads/{ids['thread_id']}/messages",
                                     json={"role": "user", "content": "x"}).json()["id"]
        ids.update(_new_store(api))
    bad = data.draw(st.sampled_from([None, None, *sorted(ids)]), label="bad id")
    if bad is not None:
        ids[bad] = data.draw(st.sampled_from(BAD_IDS), label=bad)
    concrete = path.format(**ids)
    schema_name = _request_schema(path, method) if method == "POST" else None
    raw, unstorable = (data.draw(hostile_body(schema_name)) if schema_name else ("", False))
    query = {}
    if method == "GET":
        query = data.draw(st.dictionaries(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES), max_size=3))
        if data.draw(st.sampled_from([False] * 9 + [True]), label="flood"):
            # alone: with the long values too, the request line would pass Twisted's 16 KiB limit (no response)
            query = {f"p{i}": "1" for i in range(1001)}
    response = api.request(method, concrete, content=raw.encode() if raw else None, params=query)
    response.read()
    assert response.status_code in (200, 400, 404), (method, concrete[:100], raw[:300], response.text[:500])
    deep = reference_depth(raw) > MAX_DEPTH
    if deep or unstorable:
        assert response.status_code == 400, (raw[:300], response.text[:300])
    if response.status_code == 200:
        assert not deep and not unstorable, (raw[:300], response.text[:300])
        # a stream of events, or a file's raw bytes, is not a JSON object
        data_ = response.json() if response.headers["content-type"].startswith("application/json") else {}
        if data_.get("object") == "thread.run":
            started.append((data_["thread_id"], data_["id"]))
    elif response.status_code == 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert (error["code"] == "nesting_too_deep") == (deep and schema_name is not None), (raw[:200], error)
        if unstorable and not deep:
            assert error["param"] is not None, (raw[:300], error)
        body_level = deep or "active" in error["message"] or "parse the JSON" in error["message"]
        assert error["param"] is not None or body_level or "query string" in error["message"], error
    _settle(api, started)
