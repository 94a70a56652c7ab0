"""Publish-queue events: the JSON body of each message on an assistant's publish thread.

CONTRACT (docs/events.md)::

    {"v": 1, "op": "session.create" | "session.update" | "session.delete" | "assistant.set"
                 | "app.event" | "consumer.register" | "consumer.unregister",
     "session_id": "..." (null for the last four), "args": {...}}

Events are built and read as JSON, never string templates: values are data.
Anyone with an API key can write to a publish thread, so ``parse`` never
trusts a body: whatever the content (not a string, nested thousands deep,
numbers of thousands of digits, lone surrogates), it returns an ``Event`` or
raises ``Rejected`` with the reason, and the processor records the rejection
and moves on. Every id is checked with a full match (``re.fullmatch``: ``$``
would accept a final newline).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .kinds import KINDS, MAX_CONTEXT_MESSAGES, context_refusal

VERSION = 1
OPS = ("session.create", "session.update", "session.delete", "assistant.set", "app.event", "consumer.register",
       "consumer.unregister")
#: The ops that name no session (their ``session_id`` is null or absent).
SESSIONLESS = ("assistant.set", "app.event", "consumer.register", "consumer.unregister")
#: An application event's type; ``betaassi.`` types are the app's own.
APP_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
RESERVED_TYPE_PREFIX = "betaassi."
#: How deeply an application event's data may nest arrays and objects.
MAX_DATA_DEPTH = 32
#: A consumer's name: with ``consumer:`` it is a metadata key of at most 64 characters.
CONSUMER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,54}")
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,60}")
THREAD_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
#: The largest user id an event may name: the range of a 64-bit primary key.
MAX_OWNER = 2**63 - 1
#: Bodies longer than this are refused unread (an event is a few hundred characters).
MAX_BODY_LENGTH = 32_768
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_MODEL_LENGTH = 100


class Rejected(ValueError):
    """An event the processor must record as rejected (with this reason) and skip."""


@dataclass(frozen=True)
class Event:
    op: str
    session_id: str | None
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body: dict[str, Any] = {"v": VERSION, "op": self.op, "session_id": self.session_id, "args": self.args}
        return json.dumps(body, separators=(",", ":"), sort_keys=True)


def check_session_id(value: Any) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise Rejected("session_id must be 1 to 60 characters of letters, digits, '_', '-', '.' or ':'")
    return value


def check_session_args(args: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The arguments of session.create / session.update, normalised; ``Rejected`` names the bad one."""
    allowed = {"owner", "kind", "context_messages", "model", "thread_id"} if creating else {
        "kind", "context_messages", "model"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise Rejected(f"unknown argument {_shown(unknown[0])}")
    out = dict(args)
    if creating:
        owner = args.get("owner")
        if not isinstance(owner, int) or isinstance(owner, bool) or not 1 <= owner <= MAX_OWNER:
            raise Rejected("owner must be a user id (a positive integer)")
        thread_id = args.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not THREAD_ID.fullmatch(thread_id)):
            raise Rejected("thread_id must be a thread id")
        out.setdefault("kind", "default")
    if "kind" in out and (not isinstance(out["kind"], str) or out["kind"] not in KINDS):
        raise Rejected(f"kind must be one of {', '.join(KINDS)}")
    if "context_messages" in out:
        count = out["context_messages"]
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or not 1 <= count <= MAX_CONTEXT_MESSAGES):
            raise Rejected(f"context_messages must be an integer from 1 to {MAX_CONTEXT_MESSAGES}")
    kind = out.get("kind")
    # An update without a kind, or to manyshots without N, is judged against the record when it is applied.
    if creating or kind not in (None, "manyshots"):
        refusal = context_refusal(kind, out.get("context_messages"))
        if refusal:
            raise Rejected(refusal)
    if "model" in out and out["model"] is not None and (
            not isinstance(out["model"], str) or not 1 <= len(out["model"]) <= MAX_MODEL_LENGTH
            or not _plain_text(out["model"])):
        raise Rejected(f"model must be a model name of 1 to {MAX_MODEL_LENGTH} characters, or null")
    return out


def check_app_type(value: Any) -> str:
    """An application event's type: 1 to 64 characters, not the app's own ``betaassi.`` namespace."""
    if not isinstance(value, str) or not APP_TYPE.fullmatch(value):
        raise Rejected("type must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-', starting with "
                       "a letter or digit")
    if value.startswith(RESERVED_TYPE_PREFIX):
        raise Rejected(f"type must not start with {RESERVED_TYPE_PREFIX!r} (the app's own events)")
    return value


def check_app_data(value: Any) -> Any:
    """An application event's data: a JSON value, at most ``MAX_DATA_DEPTH`` arrays/objects deep, every
    string and key encodable (no lone surrogates), every number finite. Iterative: hostile data cannot
    exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DATA_DEPTH:
                raise Rejected(f"data must nest at most {MAX_DATA_DEPTH} arrays or objects deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str) or _surrogate(key):
                        raise Rejected("data keys must be strings without lone surrogates")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if _surrogate(item):
                raise Rejected("data strings must not hold lone surrogates")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise Rejected("data numbers must be finite")
        elif not (item is None or isinstance(item, (bool, int))):
            raise Rejected(f"data must be JSON: {type(item).__name__} is not")
    return value


def check_consumer_name(value: Any) -> str:
    """A consumer's name: 1 to 55 characters (the directory key ``consumer:<name>`` fits 64)."""
    if not isinstance(value, str) or not CONSUMER_NAME.fullmatch(value):
        raise Rejected("name must be 1 to 55 characters of letters, digits, '_', '.', ':' or '-', starting with "
                       "a letter or digit")
    return value


def _surrogate(value: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in value)


def _shown(value: object) -> str:
    """A value inside a reason: its repr, cut short (a hostile body may hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain_text(value: str) -> bool:
    """No lone surrogates (they cannot be stored or encoded) and no control characters."""
    return value.isprintable() and not any("\ud800" <= ch <= "\udfff" for ch in value)


def read(content: object) -> Event | Rejected:
    """``parse``, with the rejection returned instead of raised: what a reader of the publish thread lists."""
    try:
        return parse(content)
    except Rejected as exc:
        return exc


def parse(content: object) -> Event:
    """Read one event body; raise ``Rejected`` with the reason when it is not a valid event, and nothing else."""
    try:
        return _parse(content)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected("not valid JSON: nested too deep") from None
    except Exception as exc:  # whatever a hostile body provokes (MemoryError included) is that body's rejection
        raise Rejected(f"not a valid event ({type(exc).__name__})") from None


def _parse(content: object) -> Event:
    if not isinstance(content, str):
        raise Rejected("not valid JSON")
    if len(content) > MAX_BODY_LENGTH:
        raise Rejected(f"longer than {MAX_BODY_LENGTH} characters")
    try:
        body = json.loads(content)
    except RecursionError:
        raise Rejected("not valid JSON: nested too deep") from None
    except ValueError as exc:
        too_long = "digits" in str(exc) or "integer string conversion" in str(exc)
        raise Rejected("not valid JSON: a number too long" if too_long else "not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejected("not a JSON object")
    if type(body.get("v")) is not int or body["v"] != VERSION:
        raise Rejected(f"unsupported version {_shown(body.get('v'))}; expected {VERSION}")
    op = body.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise Rejected(f"unknown op {_shown(op)}")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise Rejected("args must be a JSON object")
    extra = sorted(set(body) - {"v", "op", "session_id", "args"})
    if extra:
        raise Rejected(f"unknown key {_shown(extra[0])}")
    if op in SESSIONLESS and body.get("session_id") is not None:
        raise Rejected(f"{op} takes no session_id")
    if op == "app.event":
        unknown = sorted(set(args) - {"type", "data"})
        if unknown:
            raise Rejected(f"unknown argument {_shown(unknown[0])}")
        check_app_type(args.get("type"))
        check_app_data(args.get("data"))
        return Event(op, None, {"type": args["type"], "data": args.get("data")})
    if op in ("consumer.register", "consumer.unregister"):
        expected = {"name", "thread_id"} if op == "consumer.register" else {"name"}
        if set(args) != expected:
            raise Rejected(f"{op} takes args {{{', '.join(repr(k) for k in sorted(expected))}}}")
        check_consumer_name(args["name"])
        if op == "consumer.register" and (not isinstance(args["thread_id"], str)
                                          or not THREAD_ID.fullmatch(args["thread_id"])):
            raise Rejected("thread_id must be a thread id")
        return Event(op, None, dict(args))
    if op == "assistant.set":
        if set(args) != {"field", "value"} or not isinstance(args["field"], str):
            raise Rejected("assistant.set takes args {'field': name, 'value': value}")
        if not FIELD_NAME.fullmatch(args["field"]):
            raise Rejected("assistant.set field must be a field name")
        value = args["value"]
        if not (value is None or isinstance(value, (bool, float)) or (isinstance(value, str) and _plain_text(value))
                or (isinstance(value, int) and abs(value) <= MAX_OWNER)):
            raise Rejected("assistant.set value must be null, a boolean, a number or a string")
        return Event(op, None, args)
    session_id = check_session_id(body.get("session_id"))
    if op == "session.delete":
        if args:
            raise Rejected("session.delete takes no args")
        return Event(op, session_id, {})
    return Event(op, session_id, check_session_args(args, creating=op == "session.create"))
