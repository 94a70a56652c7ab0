"""Validate every API response of the tests against OpenAI's specification.

``tests/openapi/assistants-openapi.json`` is the Assistants part of the
official specification (see its NOTICE). ``ValidatingTransport`` wraps any
httpx2 transport (in-process or real HTTP): each JSON body is checked against
the schema the specification gives for its operation and status, each
server-sent event against the schema of its event name; a file's raw bytes
(``downloadFile``, whose 200 the specification types as a bare string) are
counted as they are. ``VALIDATED`` counts
what was checked, per operation id and transport kind, so the suite can prove
it covered every endpoint.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import httpx2
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "openapi" / "assistants-openapi.json"
SPEC_URI = "urn:openai:openapi"
VALIDATED: Counter = Counter()


class SpecViolation(AssertionError):
    pass


@cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@cache
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec(), DRAFT202012))


@cache
def schema_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=_registry())


@cache
def _operations() -> list[tuple[re.Pattern, str, str, dict]]:
    ops = []
    for path, item in spec()["paths"].items():
        pattern = re.compile("^/v1" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                ops.append((pattern, method.upper(), op["operationId"], op))
    return ops


def operation(method: str, path: str) -> tuple[str, dict]:
    path = unquote(path)
    for pattern, op_method, op_id, op in _operations():
        if op_method == method and pattern.match(path):
            return op_id, op
    raise SpecViolation(f"{method} {path} is not an operation of the specification")


def _ref_name(schema: dict) -> str:
    return schema["$ref"].rsplit("/", 1)[1]


@cache
def stream_event_schemas() -> dict[str, dict]:
    """Event name -> schema of its ``data``, from ``AssistantStreamEvent``."""
    schemas = spec()["components"]["schemas"]
    found: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and len(node) == 1:
                walk(schemas[_ref_name(node)])
                return
            props = node.get("properties", {})
            if "event" in props and "data" in props:
                for name in props["event"].get("enum", []):
                    found[name] = props["data"]
            for key in ("oneOf", "anyOf"):
                for sub in node.get(key, []):
                    walk(sub)

    walk(schemas["AssistantStreamEvent"])
    return found


def _check(validator: Draft202012Validator, instance, what: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:3])
        raise SpecViolation(f"{what} does not match the specification: {detail}")


def _is_raw_content(schema: dict) -> bool:
    """Whether a 200's schema is a bare ``{"type": "string"}``: how the specification describes an endpoint that
    returns a file's raw bytes (``downloadFile``; OpenAI sends them as they are, not as a JSON string)."""
    return schema == {"type": "string"}


def validate_json(method: str, path: str, status: int, body: bytes, kind: str) -> None:
    """Validate a response body against its operation's schema. A 200 of raw content (``_is_raw_content``) may
    hold any bytes (served with the file's own Content-Type); every other body must be JSON."""
    op_id, op = operation(method, path)
    if status == 200:
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        if _is_raw_content(schema):  # any bytes are a file's bytes (a JSON file's too)
            VALIDATED[(op_id, status, kind)] += 1
            return
        data = json.loads(body)
        _check(schema_validator(_ref_name(schema)), data, f"{op_id} 200 body")
    else:
        _check(schema_validator("ErrorResponse"), json.loads(body), f"{op_id} {status} body")
    VALIDATED[(op_id, status, kind)] += 1


def validate_event(method: str, path: str, event: str, data: str, kind: str) -> None:
    op_id, _ = operation(method, path)
    schemas = stream_event_schemas()
    if event not in schemas:
        raise SpecViolation(f"{op_id} streamed an event the specification does not name: {event}")
    schema = schemas[event]
    if event == "done":
        if data != "[DONE]":
            raise SpecViolation(f"done event carries {data!r}, not [DONE]")
    else:
        validator = (
            Draft202012Validator({**schema, "$id": "urn:event"}, registry=_registry())
            if "$ref" not in schema
            else Draft202012Validator(
                {"$ref": f"{SPEC_URI}#/components/schemas/{_ref_name(schema)}"}, registry=_registry()
            )
        )
        _check(validator, json.loads(data), f"{op_id} event {event}")
    VALIDATED[(op_id, f"event:{event}", kind)] += 1


class _SSEChecker:
    """Feeds raw SSE bytes, validating each complete event."""

    def __init__(self, method: str, path: str, kind: str) -> None:
        self.method, self.path, self.kind = method, path, kind
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in raw.decode().split("\n"):
                name, _, value = line.partition(":")
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
            if "event" in fields:
                validate_event(self.method, self.path, fields["event"], fields.get("data", ""), self.kind)


class _CheckedSyncStream(httpx2.SyncByteStream):
    def __init__(self, inner, checker: _SSEChecker) -> None:
        self.inner, self.checker = inner, checker

    def __iter__(self):
        for chunk in self.inner:
            self.checker.feed(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _CheckedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, inner, checker: _SSEChecker) -> None:
        self.inner, self.checker = inner, checker

    async def __aiter__(self):
        async for chunk in self.inner:
            self.checker.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_sse(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class ValidatingTransport(httpx2.BaseTransport):
    """Validates every response; ``requests`` records each request's method and path."""

    def __init__(self, inner: httpx2.BaseTransport, kind: str) -> None:
        self.inner, self.kind = inner, kind
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append((request.method, request.url.path))
        response = self.inner.handle_request(request)
        method, path = request.method, request.url.path
        if _is_sse(response):
            stream = _CheckedSyncStream(response.stream, _SSEChecker(method, path, self.kind))
            return httpx2.Response(response.status_code, headers=response.headers, stream=stream, request=request)
        body = response.read()
        validate_json(method, path, response.status_code, body, self.kind)
        return httpx2.Response(response.status_code, headers=response.headers, content=body, request=request)

    def close(self) -> None:
        self.inner.close()


class AsyncValidatingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, kind: str) -> None:
        self.inner, self.kind = inner, kind
        self.requests: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append((request.method, request.url.path))
        response = await self.inner.handle_async_request(request)
        method, path = request.method, request.url.path
        if _is_sse(response):
            stream = _CheckedAsyncStream(response.stream, _SSEChecker(method, path, self.kind))
            return httpx2.Response(response.status_code, headers=response.headers, stream=stream, request=request)
        body = await response.aread()
        validate_json(method, path, response.status_code, body, self.kind)
        return httpx2.Response(response.status_code, headers=response.headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()
