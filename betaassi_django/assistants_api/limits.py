"""The limits the embedded API adds to OpenAI's request schemas, so that no body can crash it.

The specification leaves some values unbounded (``max_prompt_tokens``,
``truncation_strategy.last_messages``, ``model``, the number of messages), and
JSON itself admits bodies no store can hold: nesting thousands deep (Python's
parser and validator recurse), lone UTF-16 surrogates (``"\\ud800"``: neither
UTF-8 nor PostgreSQL can store them), ``NaN``/``Infinity``/``1e309`` and
integers of any size. Everything here is checked before a value reaches the
database or the run engine; each refusal is a 400 naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

#: Arrays and objects nested deeper than this are refused before parsing. The specification's deepest fixed
#: shape is 8 levels (thread.tool_resources.file_search.vector_stores[].chunking_strategy.static); free-form
#: JSON Schemas (function parameters, response_format) get the rest.
MAX_DEPTH = 64
#: What a 32-bit integer column holds: the cap of the counts the specification leaves open.
MAX_INT32 = 2**31 - 1
#: Any other integer in a body (free-form JSON Schemas included) fits in a signed 64-bit integer.
MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
#: The longest model name the store keeps (the specification sets no bound).
MAX_MODEL_LENGTH = 256

#: Keywords added to the specification's request schemas: (schema, property path, JSON type, keyword, value).
#: A property path walks ``properties`` (``[]`` steps into an array's items).
SCHEMA_LIMITS: tuple[tuple[str, tuple[str, ...], str, str, int], ...] = (
    *((name, ("model",), "string", "maxLength", MAX_MODEL_LENGTH)
      for name in ("CreateAssistantRequest", "ModifyAssistantRequest", "CreateRunRequest",
                   "CreateThreadAndRunRequest")),
    *((name, (field,), "integer", "maximum", MAX_INT32)
      for name in ("CreateRunRequest", "CreateThreadAndRunRequest")
      for field in ("max_prompt_tokens", "max_completion_tokens")),
    ("TruncationObject", ("last_messages",), "integer", "maximum", MAX_INT32),
    ("CreateThreadRequest", ("messages",), "array", "maxItems", 1000),
    ("CreateRunRequest", ("additional_messages",), "array", "maxItems", 1000),
    ("CreateMessageRequest", ("content",), "array", "maxItems", 100),
    ("CreateMessageRequest", ("attachments",), "array", "maxItems", 20),
    ("CreateMessageRequest", ("attachments", "[]", "tools"), "array", "maxItems", 8),
    ("SubmitToolOutputsRunRequest", ("tool_outputs",), "array", "maxItems", 1000),
)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_CHANGE = [1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256)]
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit``, found without recursing.

    Strings are cut out, every byte but brackets dropped, and the running depth
    summed, all in C: about 0.1 s for a 4 MB body of nothing but brackets.
    Brackets that do not match are left to the parser to refuse.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_CHANGE.__getitem__, brackets)), default=0) > limit


def plausible_id(value: str) -> bool:
    """Whether ``value`` could be an id of this store (so worth a database lookup)."""
    return bool(_ID.fullmatch(value))


def param_path(path: list) -> str:
    """``["messages", 0, "content"]`` -> ``messages[0].content``, as OpenAI names params."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(value: Any, path: list) -> Iterator[tuple[list, Any]]:
    """Every key and scalar of a decoded body with its path (keys are reported at their object's path)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key
            yield from _walk(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, [*path, index])
    else:
        yield path, value


def unstorable(body: Any) -> tuple[str | None, str, str] | None:
    """The first value no store can keep, as ``(param, message, code)``; None when all can be stored."""
    for path, value in _walk(body, []):
        problem = _problem(value)
        if problem is not None:
            name = param_path(path) or None
            message, code = problem
            return name, message.replace("{where}", f"'{name}'" if name else "the request body"), code
    return None


def _problem(value: Any) -> tuple[str, str] | None:
    """Why one key or scalar cannot be stored, as a message template (``{where}``) and code."""
    if isinstance(value, str):
        if "\x00" in value:
            return "Invalid value for {where}: null characters are not allowed.", "invalid_value"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            bad = f"\\u{ord(value[error.start]):04x}"
            return (f"Invalid value for {{where}}: the string holds a lone surrogate ({bad}), which is not valid "
                    "Unicode.", "invalid_value")
    elif isinstance(value, float) and not math.isfinite(value):
        return (f"Invalid value for {{where}}: numbers must be finite (at most about 1.8e308 in magnitude), but got "
                f"{value} instead.", "invalid_value")
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT64 <= value <= MAX_INT64:
        side, bound = ("above maximum", f"<= {MAX_INT64}") if value > 0 else ("below minimum", f">= {MIN_INT64}")
        return (f"Invalid {{where}}: integer {side} value. Expected a value {bound}, but got {value} instead.",
                f"integer_{side.replace('imum', '').replace(' ', '_')}_value")
    return None


def apply_schema_limits(schemas: dict) -> dict:
    """Add ``SCHEMA_LIMITS`` to the specification's ``components.schemas`` (in place; returned)."""
    for schema_name, path, kind, keyword, value in SCHEMA_LIMITS:
        node = schemas[schema_name]
        for step in path:
            node = _branch(node, "array")["items"] if step == "[]" else node["properties"][step]
        branch = _branch(node, kind)
        branch[keyword] = value
    return schemas


def _branch(node: dict, kind: str) -> dict:
    """The (sub)schema of ``node`` that describes values of JSON type ``kind`` (through anyOf/oneOf)."""
    if node.get("type") == kind:
        return node
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, []):
            found = _branch_or_none(option, kind)
            if found is not None:
                return found
    raise LookupError(f"no {kind} branch in {node}")


def _branch_or_none(node: dict, kind: str) -> dict | None:
    try:
        return _branch(node, kind)
    except LookupError:
        return None
