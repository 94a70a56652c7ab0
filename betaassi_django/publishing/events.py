"""Publish-queue events: the JSON body of each message on an assistant's publish thread.

CONTRACT (DESIGN.md section 7)::

    {"v": 1, "op": "session.create" | "session.update" | "session.delete" | "assistant.set",
     "session_id": "...", "args": {...}}

Events are built and read as JSON, never string templates: values are data.
Anyone can write to a publish thread, so ``parse`` never trusts a body: it
returns an ``Event`` or raises ``Rejected`` with the reason, and the processor
records the rejection and moves on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
OPS = ("session.create", "session.update", "session.delete", "assistant.set")
KINDS = ("default", "oneshot", "manyshots")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,60}$")
MAX_MODEL_LENGTH = 100
MAX_CONTEXT_MESSAGES = 1000


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
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise Rejected("session_id must be 1 to 60 characters of letters, digits, '_', '-', '.' or ':'")
    return value


def check_session_args(args: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The arguments of session.create / session.update, normalised; ``Rejected`` names the bad one."""
    allowed = {"owner", "kind", "context_messages", "model", "thread_id"} if creating else {
        "kind", "context_messages", "model"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise Rejected(f"unknown argument {unknown[0]!r}")
    out = dict(args)
    if creating:
        if not isinstance(args.get("owner"), int) or isinstance(args.get("owner"), bool) or args["owner"] < 1:
            raise Rejected("owner must be a user id (a positive integer)")
        thread_id = args.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not 1 <= len(thread_id) <= 64):
            raise Rejected("thread_id must be a thread id")
        out.setdefault("kind", "default")
    if "kind" in out and out["kind"] not in KINDS:
        raise Rejected(f"kind must be one of {', '.join(KINDS)}")
    if "context_messages" in out:
        count = out["context_messages"]
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or not 1 <= count <= MAX_CONTEXT_MESSAGES):
            raise Rejected(f"context_messages must be an integer from 1 to {MAX_CONTEXT_MESSAGES}")
    kind = out.get("kind")
    if kind == "manyshots" and creating and not out.get("context_messages"):
        raise Rejected("context_messages (N >= 1) is required for kind 'manyshots'")
    if kind in ("default", "oneshot") and out.get("context_messages") is not None:
        raise Rejected(f"context_messages applies only to kind 'manyshots', not {kind!r}")
    if "model" in out and out["model"] is not None and (
            not isinstance(out["model"], str) or not 1 <= len(out["model"]) <= MAX_MODEL_LENGTH):
        raise Rejected(f"model must be a model name of 1 to {MAX_MODEL_LENGTH} characters, or null")
    return out


def parse(content: str) -> Event:
    """Read one event body; raise ``Rejected`` with the reason when it is not a valid event."""
    try:
        body = json.loads(content)
    except (TypeError, ValueError):
        raise Rejected("not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejected("not a JSON object")
    if body.get("v") != VERSION:
        raise Rejected(f"unsupported version {body.get('v')!r}; expected {VERSION}")
    op = body.get("op")
    if op not in OPS:
        raise Rejected(f"unknown op {op!r}")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise Rejected("args must be a JSON object")
    extra = sorted(set(body) - {"v", "op", "session_id", "args"})
    if extra:
        raise Rejected(f"unknown key {extra[0]!r}")
    if op == "assistant.set":
        if set(args) != {"field", "value"} or not isinstance(args["field"], str):
            raise Rejected("assistant.set takes args {'field': name, 'value': value}")
        return Event(op, None, args)
    session_id = check_session_id(body.get("session_id"))
    if op == "session.delete":
        if args:
            raise Rejected("session.delete takes no args")
        return Event(op, session_id, {})
    return Event(op, session_id, check_session_args(args, creating=op == "session.create"))
