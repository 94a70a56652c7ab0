"""A local stand-in for an OpenAI-compatible model endpoint, on loopback, for tests and benchmarks.

The product's ``openai`` responder talks to a model provider across the
network; tests cannot reach one, so ``FakeUpstream`` is a real HTTP server (in
a thread) that speaks the real wire formats of ``POST /v1/responses`` and
``POST /v1/chat/completions``: JSON or server-sent events, text, refusals and
function calls; and ``POST /v1/embeddings`` (``tests/fake_embeddings.py``).
Every request the product sends is validated against the
request schema of OpenAI's specification, and every body and event the fake
sends back against the response schemas (``tests/upstream_openapi/``, MIT,
Copyright (c) OpenAI); anything off is recorded in ``violations`` and a bad
request is answered 400, as OpenAI would.

Tests script the replies, one per request, in order::

    fake.script(Text(["Hel", "lo"]), Calls([("get_weather", '{"city": "Paris"}')]), Status(429))
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import secrets
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests import fake_embeddings

SCHEMAS_PATH = Path(__file__).parent / "upstream_openapi" / "upstream-schemas.json"
SCHEMAS_URI = "urn:openai:upstream"


@cache
def _registry() -> Registry:
    return Registry().with_resource(SCHEMAS_URI, Resource.from_contents(json.loads(SCHEMAS_PATH.read_text()),
                                                                        DRAFT202012))


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SCHEMAS_URI}#/components/schemas/{name}"}, registry=_registry())


@cache
def _stream_event_schemas() -> dict[str, str]:
    """Responses stream event type -> its schema's name, from ``ResponseStreamEvent``."""
    schemas = json.loads(SCHEMAS_PATH.read_text())["components"]["schemas"]
    names = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        for kind in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
            names[kind] = name
    return names


def problems(schema: str, value) -> list[str]:
    return [f"{schema} at {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
            for e in validator(schema).iter_errors(value)]


# -- scripted replies ---------------------------------------------------------------------------------------


@dataclass
class Text:
    """A text reply in these deltas; ``delay`` seconds before each delta after the first.

    ``first_delay`` is the model's time to its first token (after the response is created).
    """

    deltas: list[str]
    usage: tuple[int, int] = (11, 7)
    delay: float = 0.0
    first_delay: float = 0.0
    #: The model stopped at its output token limit after these deltas (Responses ``response.incomplete`` with
    #: reason ``max_output_tokens``; Chat ``finish_reason: "length"``).
    incomplete: bool = False


@dataclass
class Calls:
    """Function calls ``(name, arguments)`` (after optional text deltas), arguments streamed in pieces."""

    calls: list[tuple[str, str]]
    text: list[str] = field(default_factory=list)
    usage: tuple[int, int] = (13, 5)
    #: Responses API: a reasoning item before the calls (its ``encrypted_content`` only when the request's
    #: ``include`` asks for ``reasoning.encrypted_content``, as OpenAI's); recorded in ``FakeUpstream.reasoning``.
    reasoning: bool = False


@dataclass
class Refusal:
    text: str
    usage: tuple[int, int] = (9, 3)


@dataclass
class Failed:
    """Responses API: the stream starts, sends these text deltas, then ``response.failed`` with this error."""

    code: str
    message: str
    deltas: list[str] = field(default_factory=list)


@dataclass
class Status:
    """An HTTP error with OpenAI's error body; ``retry-after-ms`` keeps SDK retries quick."""

    status: int
    message: str = "The fake upstream is unhappy."
    code: str | None = None


@dataclass
class Garbage:
    """A 200 event stream that is not the wire format (a broken proxy or compatible server): these bytes, then
    the end of the body."""

    body: bytes = b"event: response.created\ndata: {not json\n\n"


@dataclass
class Hang:
    """Answer nothing for ``seconds`` (the client's timeout fires first)."""

    seconds: float


@dataclass
class Received:
    path: str
    body: dict
    headers: dict[str, str]


@dataclass
class FakeUpstream:
    default: object = field(default_factory=lambda: Text(["Hello", " from", " the", " model."]))
    #: Validate the events the fake sends (its self-check); the bench turns it off for both arms alike.
    check_replies: bool = True
    #: ``POST /v1/embeddings`` answers this error instead of vectors while set (an unreachable or refusing model).
    embeddings_failure: Status | None = None
    requests: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    disconnects: int = 0
    #: The reasoning items sent (``Calls(reasoning=True)``), as sent.
    reasoning: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._replies: deque = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        fake = self

        class Handler(_Handler):
            upstream = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-upstream", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *replies) -> None:
        with self._lock:
            self._replies.extend(replies)

    def next_reply(self):
        with self._lock:
            return self._replies.popleft() if self._replies else self.default

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(8)}"

    def bodies(self, path_end: str = "") -> list[dict]:
        return [r.body for r in self.requests if r.path.endswith(path_end)]

    def start(self) -> FakeUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    upstream: FakeUpstream
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Send each event as it is written, as real servers do (no Nagle delay behind delayed ACKs).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.upstream.disconnects += 1
            raise ClientGone from exc

    def _check(self, schema: str, value) -> None:
        if self.upstream.check_replies:
            self.upstream.violations += problems(schema, value)

    def _error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(status, "server_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self._check("ErrorResponse", body)
        self._json(status, body, {"retry-after-ms": "10"})

    # -- requests -----------------------------------------------------------------

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        self.upstream.requests.append(Received(path, body, {k.lower(): v for k, v in self.headers.items()}))
        schema = {"/v1/responses": "CreateResponse", "/v1/chat/completions": "CreateChatCompletionRequest",
                  "/v1/embeddings": "CreateEmbeddingRequest"}.get(path)
        if schema is None:
            self._error(404, f"Invalid URL (POST {path})")
            return
        found = problems(schema, body) if isinstance(body, dict) else [f"{schema}: the body is not a JSON object"]
        if found:
            self.upstream.violations += found
            self._error(400, found[0])
            return
        if path == "/v1/embeddings":
            self._embeddings(body)
            return
        reply = self.upstream.next_reply()
        if isinstance(reply, Hang):
            time.sleep(reply.seconds)
            with contextlib.suppress(OSError):
                self._error(500, "answered too late")
            return
        if isinstance(reply, Status):
            self._error(reply.status, reply.message, reply.code)
            return
        if isinstance(reply, Garbage):
            self._start_stream()
            with contextlib.suppress(ClientGone):
                self._chunk(reply.body)
                self._chunk(b"")
            return
        try:
            if path == "/v1/responses":
                self._responses(body, reply)
            else:
                self._chat(body, reply)
        except ClientGone:
            self.close_connection = True

    # -- embeddings ----------------------------------------------------------------

    def _embeddings(self, body: dict) -> None:
        """``tests/fake_embeddings.py``'s vectors (scripted replies are for the model's turns, not for these). The
        specification's ``Embedding`` has a float array; with ``encoding_format: base64`` (the SDK's default ask)
        OpenAI sends the float32 little-endian bytes in base64 instead: checked as floats, sent as asked."""
        failure = self.upstream.embeddings_failure
        if failure is not None:
            self._error(failure.status, failure.message, failure.code)
            return
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        if not all(isinstance(text, str) for text in inputs):
            self._error(400, "The fake embeds text inputs only, not token arrays.", param="input")
            return
        vectors = [fake_embeddings.vector(text, body.get("dimensions") or fake_embeddings.DEFAULT_DIMENSIONS)
                   for text in inputs]
        words = sum(len(text.split()) for text in inputs)
        reply = {"object": "list", "model": body["model"], "usage": {"prompt_tokens": words, "total_tokens": words},
                 "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]}
        self._check("CreateEmbeddingResponse", reply)
        if body.get("encoding_format") == "base64":
            for item in reply["data"]:
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(item['embedding'])}f",
                                                                 *item["embedding"])).decode()
        self._json(200, reply)

    # -- the Responses API ---------------------------------------------------------

    def _response(self, response_id: str, body: dict, status: str, output: list,
                  usage: tuple[int, int] | None) -> dict:
        response = {
            "id": response_id, "object": "response", "created_at": int(time.time()),
            "status": status, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "model": body["model"], "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "metadata": {},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
        }
        if usage is not None:
            response["usage"] = {"input_tokens": usage[0], "input_tokens_details": {"cached_tokens": 0,
                                                                                   "cache_write_tokens": 0},
                                 "output_tokens": usage[1], "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": sum(usage)}
        return response

    def _responses(self, body: dict, reply) -> None:
        if isinstance(reply, Failed):
            self._responses_failure(body, reply)
            return
        text = reply.deltas if isinstance(reply, Text) else reply.text if isinstance(reply, Calls) else []
        calls = reply.calls if isinstance(reply, Calls) else []
        output: list[dict] = []
        if isinstance(reply, Calls) and reply.reasoning:
            reasoning = {"type": "reasoning", "id": self.upstream.new_id("rs"), "summary": []}
            if "reasoning.encrypted_content" in (body.get("include") or []):
                reasoning["encrypted_content"] = "gAAAAB" + secrets.token_urlsafe(48)
            self.upstream.reasoning.append(reasoning)
            output.append(reasoning)
        base = len(output)  # the output index of the message (or the first call)
        incomplete = isinstance(reply, Text) and reply.incomplete
        message_id = self.upstream.new_id("msg")
        if text:
            output.append({"type": "message", "id": message_id, "role": "assistant",
                           "status": "incomplete" if incomplete else "completed",
                           "content": [{"type": "output_text", "text": "".join(text), "annotations": [],
                                        "logprobs": []}]})
        if isinstance(reply, Refusal):
            output.append({"type": "message", "id": message_id, "role": "assistant", "status": "completed",
                           "content": [{"type": "refusal", "refusal": reply.text}]})
        call_items = [{"type": "function_call", "id": self.upstream.new_id("fc"), "call_id": self.upstream.new_id(
            "call"), "name": name, "arguments": arguments, "status": "completed"} for name, arguments in calls]
        output += call_items
        response_id = self.upstream.new_id("resp")
        final = self._response(response_id, body, "incomplete" if incomplete else "completed", output, reply.usage)
        if incomplete:
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        if not body.get("stream"):
            self._check("Response", final)
            self._json(200, final)
            return
        self._start_stream()
        sequence = itertools.count()

        def send(event: dict) -> None:
            event["sequence_number"] = next(sequence)
            if self.upstream.check_replies:
                self._check(_stream_event_schemas()[event["type"]], event)
            self._chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

        started = self._response(response_id, body, "in_progress", [], None)
        send({"type": "response.created", "response": started})
        send({"type": "response.in_progress", "response": started})
        index = base
        for at, item in enumerate(output[:base]):  # reasoning items
            send({"type": "response.output_item.added", "output_index": at, "item": {"type": "reasoning",
                  "id": item["id"], "summary": []}})
            send({"type": "response.output_item.done", "output_index": at, "item": item})
        if text or isinstance(reply, Refusal):
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if text else {
                "type": "refusal", "refusal": ""}
            send({"type": "response.output_item.added", "output_index": base, "item": {
                "type": "message", "id": message_id, "role": "assistant", "status": "in_progress", "content": []}})
            send({"type": "response.content_part.added", "item_id": message_id, "output_index": base,
                  "content_index": 0, "part": part})
            where = {"item_id": message_id, "output_index": base, "content_index": 0}
            if text:
                for number, delta in enumerate(text):
                    _pause(reply, number)
                    send({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []})
                send({"type": "response.output_text.done", **where, "text": "".join(text), "logprobs": []})
            else:
                send({"type": "response.refusal.delta", **where, "delta": reply.text})
                send({"type": "response.refusal.done", **where, "refusal": reply.text})
            send({"type": "response.content_part.done", **where, "part": output[base]["content"][0]})
            send({"type": "response.output_item.done", "output_index": base, "item": output[base]})
            index = base + 1
        for offset, item in enumerate(call_items):
            at = index + offset
            send({"type": "response.output_item.added", "output_index": at,
                  "item": {**item, "arguments": "", "status": "in_progress"}})
            arguments = item["arguments"]
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]):
                send({"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": at,
                      "delta": piece})
            send({"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": at,
                  "name": item["name"], "arguments": arguments})
            send({"type": "response.output_item.done", "output_index": at, "item": item})
        send({"type": "response.incomplete" if incomplete else "response.completed", "response": final})
        self._chunk(b"")

    def _responses_failure(self, body: dict, reply: Failed) -> None:
        self._start_stream()
        response_id, message_id = self.upstream.new_id("resp"), self.upstream.new_id("msg")
        sequence = itertools.count()

        def send(event: dict) -> None:
            event["sequence_number"] = next(sequence)
            self._check(_stream_event_schemas()[event["type"]], event)
            self._chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

        send({"type": "response.created", "response": self._response(response_id, body, "in_progress", [], None)})
        if reply.deltas:
            send({"type": "response.output_item.added", "output_index": 0, "item": {
                "type": "message", "id": message_id, "role": "assistant", "status": "in_progress", "content": []}})
            send({"type": "response.content_part.added", "item_id": message_id, "output_index": 0,
                  "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
            for delta in reply.deltas:
                send({"type": "response.output_text.delta", "item_id": message_id, "output_index": 0,
                      "content_index": 0, "delta": delta, "logprobs": []})
        failed = self._response(response_id, body, "failed", [], None)
        failed["error"] = {"code": reply.code, "message": reply.message}
        send({"type": "response.failed", "response": failed})
        self._chunk(b"")

    # -- Chat Completions ---------------------------------------------------------

    def _chat(self, body: dict, reply) -> None:
        completion_id, created, model = self.upstream.new_id("chatcmpl"), int(time.time()), body["model"]
        text = reply.deltas if isinstance(reply, Text) else reply.text if isinstance(reply, Calls) else []
        calls = [(self.upstream.new_id("call"), name, arguments) for name, arguments in
                 (reply.calls if isinstance(reply, Calls) else [])]
        finish = "tool_calls" if calls else "length" if isinstance(reply, Text) and reply.incomplete else "stop"
        usage = {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1],
                 "total_tokens": sum(reply.usage)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(text) if text else None,
                       "refusal": reply.text if isinstance(reply, Refusal) else None}
            if calls:
                message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                         for i, n, a in calls]
            completion = {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                          "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                          "usage": usage}
            self._check("CreateChatCompletionResponse", completion)
            self._json(200, completion)
            return
        self._start_stream()

        def send(delta: dict | None, finish_reason: str | None = None, chunk_usage: dict | None = None) -> None:
            chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                                          "logprobs": None}]}
            if chunk_usage is not None:
                chunk["usage"] = chunk_usage
            self._check("CreateChatCompletionStreamResponse", chunk)
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

        send({"role": "assistant", "content": ""})
        for number, delta in enumerate(text):
            _pause(reply, number)
            send({"content": delta})
        if isinstance(reply, Refusal):
            send({"refusal": reply.text})
        for index, (call_id, name, arguments) in enumerate(calls):
            send({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": ""}}]})
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]):
                send({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        send({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            send(None, chunk_usage=usage)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


def _pause(reply, number: int) -> None:
    """A text reply's pacing before delta ``number``."""
    if isinstance(reply, Text):
        pause = reply.first_delay if number == 0 else reply.delay
        if pause:
            time.sleep(pause)


def main() -> None:
    """``python -m tests.fake_upstream``: serve a paced text reply to every request until killed (for benchmarks).

    Prints the base URL as its first line. In its own process the fake does not compete with the
    product for the interpreter, as a real upstream on another machine would not.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--deltas", type=int, default=40)
    parser.add_argument("--first-delay", type=float, default=0.05)
    parser.add_argument("--delay", type=float, default=0.002)
    args = parser.parse_args()
    reply = Text([f"word{n} " for n in range(args.deltas)], first_delay=args.first_delay, delay=args.delay)
    with FakeUpstream(default=reply, check_replies=False) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()  # until the parent closes our stdin (or kills us)


if __name__ == "__main__":
    main()
