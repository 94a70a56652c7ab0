"""Fuzz every implemented path of the specification over real HTTP.

Bodies are generated from the specification's own request schemas (mostly
valid, so the handlers' deep paths run) and then mutated (wrong types, extra
keys, oversized strings, junk JSON, bytes that are not JSON); path ids are real
or random; query parameters are junk too. Whatever arrives, the server answers
either a 200 whose body matches the specification or an OpenAI-shaped error
that is not a 5xx, and a body error names its ``param``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from betaassi_django.client import tls_context
from tests.spec import spec, validate_json

SCHEMAS = json.loads((Path(__file__).parent.parent / "betaassi_django" / "assistants_api" / "schemas" /
                      "requests.json").read_text())["components"]["schemas"]
SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
JUNK = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=8)
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])


def from_schema(schema: dict, depth: int = 0) -> st.SearchStrategy:
    """A small JSON Schema -> Hypothesis strategy, enough for the request schemas."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]], depth + 1))
    if depth > 6:
        return st.none()
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema and "properties" in schema:  # forms of one object (which members it requires)
            rest = {k: v for k, v in schema.items() if k != key}
            return st.one_of([from_schema({**rest, **s}, depth) for s in schema[key]])
        if key in schema:
            return st.one_of([from_schema(s, depth + 1) for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], depth + 1) if schema["allOf"] else JUNK
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, depth) for k in kind])
    if kind == "string":
        return st.text(max_size=min(schema.get("maxLength", 40), 40))
    if kind == "integer":
        return st.integers(schema.get("minimum", -1000), schema.get("maximum", 10_000))
    if kind == "number":
        return st.floats(schema.get("minimum", -10.0), schema.get("maximum", 10.0))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = {k: from_schema(props.get(k, {}), depth + 1) for k in schema.get("required", [])}
        optional = {k: from_schema(v, depth + 1) for k, v in props.items() if k not in required}
        if not props and isinstance(schema.get("additionalProperties"), dict):
            return st.dictionaries(st.text(max_size=10), from_schema(schema["additionalProperties"], depth + 1),
                                   max_size=4)
        return st.fixed_dictionaries(required, optional=optional)
    return JUNK


def mutate(body: dict) -> st.SearchStrategy:
    """Break one thing in a valid-ish body."""
    if not body:
        return st.just({"unexpected": 1})
    keys = sorted(body)
    return st.one_of(
        st.builds(lambda k, v: {**body, k: v}, st.sampled_from(keys), JUNK),
        st.builds(lambda k: {**body, k: "x" * 300_000}, st.sampled_from(keys)),
        st.builds(lambda extra: {**body, f"zz_{extra}": True}, st.text("abc", min_size=1, max_size=4)),
    )


def _objects(server) -> dict[str, str]:
    from tests.conftest import http_client

    client = http_client(server)
    assistant = client.beta.assistants.create(model="fuzz")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "fuzz"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=20)
    message = client.beta.threads.messages.list(thread.id, limit=1).data[0]
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    file_id = client.files.create(file=("fuzz.txt", b"fuzz"), purpose="assistants").id
    store = client.vector_stores.create()
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[file_id])
    return {"assistant_id": assistant.id, "thread_id": thread.id, "message_id": message.id, "run_id": run.id,
            "step_id": step.id, "file_id": file_id, "vector_store_id": store.id, "batch_id": batch.id}


@pytest.fixture(scope="module")
def world(daphne_server):
    """Real objects, so valid paths reach the handlers (not only the 404s)."""
    return _objects(daphne_server)


OPERATIONS = sorted(
    (path, method.upper())
    for path, item in spec()["paths"].items()
    for method in item
    if method in ("get", "post", "delete")
)


#: One client for every example (a new one per request loaded the TLS bundle each time: 40% of the file's time);
#: a new connection per request all the same, as the examples are independent.
_HTTP = httpx2.Client(timeout=60, verify=tls_context(), limits=httpx2.Limits(max_keepalive_connections=0))


def _send(server, method: str, path: str, body: bytes | None = None, query: dict | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    response = _HTTP.request(method, server.base_url + path, content=body, params=query, headers=headers)
    assert response.status_code < 500, (method, path, body and body[:200], response.text[:500])
    validate_json(method, "/v1" + path, response.status_code, response.content, "fuzz")
    return response


def _request_schema(path: str, method: str) -> str | None:
    op = spec()["paths"][path][method.lower()]
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = content.get("schema", {}).get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


#: The objects DELETE examples aim at, made again only once one of them was deleted (an example that deletes
#: nothing, a 404 for a made-up id, leaves them as they were): a new set per example was most of the DELETEs' time.
_DELETABLE: dict[str, str] = {}


def _deletable(server) -> dict[str, str]:
    if not _DELETABLE:
        _DELETABLE.update(_objects(server))
    return dict(_DELETABLE)


@pytest.mark.slow
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
@FUZZ
@given(data=st.data())
def test_fuzz_operation(daphne_server, world, path, method, data):
    if method == "DELETE":
        world = _deletable(daphne_server)  # deleting the shared objects would starve the other operations
    ids = {name: data.draw(st.sampled_from([real, real, f"{real.split('_')[0]}_nope", "x y", "é%"]), label=name)
           for name, real in world.items()}
    concrete = path.format(**ids)
    if method == "GET":
        query = data.draw(st.dictionaries(st.sampled_from(["limit", "order", "after", "before", "run_id", "include[]"]),
                                          st.text(max_size=12) | st.integers(-5, 150).map(str), max_size=3))
        _send(daphne_server, method, concrete, query=query)
        return
    schema_name = _request_schema(path, method)
    if schema_name is None:
        if _send(daphne_server, method, concrete).status_code == 200 and method == "DELETE":
            _DELETABLE.clear()  # something was deleted: the next example gets a new set
        return
    body = data.draw(from_schema(SCHEMAS[schema_name]), label="body")
    if schema_name in ("CreateRunRequest", "CreateThreadAndRunRequest") and isinstance(body, dict):
        body["assistant_id"] = data.draw(st.sampled_from([world["assistant_id"], "asst_nope"]))
        body.pop("stream", None)  # streams are covered by the scenario suite
    variant = data.draw(st.sampled_from(["as generated", "mutated", "junk json", "not json"]))
    if variant == "mutated":
        body = data.draw(mutate(body))
    elif variant == "junk json":
        body = data.draw(JUNK)
    raw = data.draw(st.binary(max_size=40)) if variant == "not json" else json.dumps(body).encode()
    response = _send(daphne_server, method, concrete, body=raw)
    if response.status_code == 400 and variant == "mutated":
        error = response.json()["error"]
        active_run = "active run" in error["message"]
        assert error["param"] is not None or active_run or "larger than" in error["message"], error
