"""Request validation: OpenAI's request schemas, then the limits they leave out.

Bodies are checked against the request schemas of OpenAI's specification
(``schemas/requests.json``), with the bounds ``limits`` adds where the
specification leaves a value open, so what the embedded API accepts is what
the specification allows; metadata limits, which the specification states only
in prose, and values no store can keep (``limits.unstorable``) are checked here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .errors import ApiError, invalid
from .limits import apply_schema_limits, param_path, unstorable

SCHEMAS_URI = "urn:betaassi:assistants-requests"
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    type(None): "null",
}
_SCHEMA_TYPES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a decimal",
    "null": "null",
}
_BOUNDS = ("maxLength", "minLength", "maximum", "minimum", "maxItems", "minItems")
_BOUND_OF = {"maxLength": "maximum", "minLength": "minimum", "maxItems": "maximum", "minItems": "minimum"}


@cache
def _contents() -> dict:
    contents = json.loads((Path(__file__).parent / "schemas" / "requests.json").read_text())
    for name, schema in contents["components"]["schemas"].items():
        _resolve_recursive_refs(schema, name)
    apply_schema_limits(contents["components"]["schemas"])
    return contents


def _resolve_recursive_refs(schema: Any, name: str) -> None:
    """``{"$recursiveRef": "#"}`` (draft 2019-09, which Draft 2020-12 ignores: ``CompoundFilter``'s nested filters
    would match anything, and a ``ComparisonFilter`` in it both forms of its ``oneOf``) as a ``$ref`` to the
    component ``name`` it sits in."""
    if isinstance(schema, list):
        for item in schema:
            _resolve_recursive_refs(item, name)
    elif isinstance(schema, dict):
        if schema.get("$recursiveRef") == "#":
            del schema["$recursiveRef"]
            schema["$ref"] = f"{_LOCAL_REF}{name}"
        for value in schema.values():
            _resolve_recursive_refs(value, name)


@cache
def _registry() -> Registry:
    return Registry().with_resource(SCHEMAS_URI, Resource.from_contents(_contents(), DRAFT202012))


_LOCAL_REF = "#/components/schemas/"


def _inlined(schema: Any, schemas: dict, seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with each ``$ref`` to a component replaced by the component itself (so no reference is looked
    up at each validation: that was half of a body's validation); one that refers to itself stays a reference,
    made absolute so the registry resolves it."""
    if isinstance(schema, list):
        return [_inlined(item, schemas, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_LOCAL_REF):
        name = ref[len(_LOCAL_REF):]
        if name in seen or name not in schemas:
            return {**schema, "$ref": f"{SCHEMAS_URI}{ref}"}
        target = _inlined(schemas[name], schemas, (*seen, name))
        rest = _inlined({key: value for key, value in schema.items() if key != "$ref"}, schemas, seen)
        if not rest:
            return target
        return {**rest, "allOf": [target, *rest.get("allOf", [])]}  # a $ref beside other keywords: both apply
    return {key: _inlined(value, schemas, seen) if key not in ("const", "enum", "default", "example") else value
            for key, value in schema.items()}


@cache
def validator(schema_name: str) -> Draft202012Validator:
    schemas = _contents()["components"]["schemas"]
    return Draft202012Validator(_inlined(schemas[schema_name], schemas, (schema_name,)), registry=_registry())


def _describe(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "a value")


def _wrong_type(where: str, expected: str, value: Any, param: str | None) -> ApiError:
    """OpenAI's wording for a value of another JSON type (``where``: a quoted param, or "the request body")."""
    return invalid(f"Invalid type for {where}: expected {expected}, but got {_describe(value)} instead.",
                   param=param, code="invalid_type")


def _bad_length(where: str, kind: str, bound: str, limit: int, length: int, param: str | None) -> ApiError:
    """OpenAI's wording for a ``kind`` ("string" or "array") past its ``bound`` ("maximum" or "minimum")."""
    kind_with = f"{'an' if kind == 'array' else 'a'} {kind} with"
    too, side = ("long", "above_max") if bound == "maximum" else ("short", "below_min")
    return invalid(f"Invalid {where}: {kind} too {too}. Expected {kind_with} {bound} length {limit}, "
                   f"but got {kind_with} length {length} instead.", param=param, code=f"{kind}_{side}_length")


def _error_for(error: ValidationError) -> Exception:
    """Translate the most relevant schema error into OpenAI's wording."""
    path = list(error.absolute_path)
    param = param_path(path) or None
    where = f"'{param}'" if param else "the request body"
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        name = param_path([*path, extra[0]]) if extra else param
        return invalid(
            f"Unrecognized request argument supplied: {extra[0] if extra else ''}", param=name, code="unknown_parameter"
        )
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        name = param_path([*path, missing])
        return invalid(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if kind == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        return _wrong_type(where, " or ".join(_SCHEMA_TYPES.get(t, t) for t in wanted), value, param)
    if kind in ("maxLength", "minLength"):
        return _bad_length(where, "string", _BOUND_OF[kind], expected, len(value), param)
    if kind in ("maximum", "minimum"):
        word = "integer" if isinstance(value, int) else "decimal"
        side, op = ("above", "<=") if kind == "maximum" else ("below", ">=")
        return invalid(
            f"Invalid {where}: {word} {side} {'maximum' if kind == 'maximum' else 'minimum'} value. "
            f"Expected a value {op} {expected}, but got {value} instead.",
            param=param,
            code=f"{word}_{side}_{'max' if kind == 'maximum' else 'min'}_value",
        )
    if kind in ("maxItems", "minItems"):
        return _bad_length(where, "array", _BOUND_OF[kind], expected, len(value), param)
    if kind in ("enum", "const"):
        allowed = expected if kind == "enum" else [expected]
        listed = ", ".join(repr(v) for v in allowed)
        return invalid(
            f"Invalid value for {where}: {json.dumps(value)[:100]}. Supported values are: {listed}.",
            param=param,
            code="invalid_value",
        )
    if kind in ("anyOf", "oneOf"):
        bounded = [e for e in error.context if e.validator in _BOUNDS and e.instance is value]
        if bounded:  # the one form that has the value's type, but not its size
            return _error_for(bounded[0])
        if error.context and all(e.validator == "required" and e.instance is value for e in error.context):
            # forms that differ by which member they require (a file batch's ``file_ids`` or ``files``)
            names = list(dict.fromkeys(param_path([*path, e.message.split("'")[1]]) for e in error.context))
            return invalid(f"Missing required parameter: {' or '.join(repr(n) for n in names)}.", param=names[0],
                           code="missing_required_parameter")
        return invalid(
            f"Invalid value for {where}: {_describe(value)} does not match any of the forms the API accepts here.",
            param=param,
            code="invalid_value",
        )
    return invalid(f"Invalid value for {where}: {error.message[:200]}", param=param, code="invalid_value")


def validate_body(schema_name: str, body: Any) -> dict:
    """Validate a decoded JSON body; raise a 400 ``ApiError`` naming the param."""
    if not isinstance(body, dict):
        raise _wrong_type("the request body", "an object", body, None)
    error = best_match(validator(schema_name).iter_errors(body))
    if error is not None:
        raise _error_for(error)
    refused = unstorable(body)
    if refused is not None:
        param, message, code = refused
        raise invalid(message, param=param, code=code)
    for path, metadata in _metadata_values(body):
        check_metadata(metadata, path)
    return body


def _metadata_values(body: dict):
    """Every metadata object a request body can carry, with its param path."""
    if "metadata" in body:
        yield "metadata", body["metadata"]
    thread = body.get("thread")
    if isinstance(thread, dict):
        yield from ((f"thread.{p}", m) for p, m in _metadata_values(thread))
    for field in ("messages", "additional_messages"):
        for index, message in enumerate(body.get(field) or []):
            if isinstance(message, dict) and "metadata" in message:
                yield f"{field}[{index}].metadata", message["metadata"]


def check_metadata(metadata: Any, param: str = "metadata") -> None:
    """At most 16 pairs, keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _wrong_type(f"'{param}'", "an object", metadata, param)
    for index, (key, value) in enumerate(metadata.items()):
        name = f"{param}.{key}"
        if index >= METADATA_MAX_PAIRS:
            raise invalid(
                f"Invalid '{param}': too many properties. Expected an object with at most "
                f"{METADATA_MAX_PAIRS} properties, but got an object with {len(metadata)} properties "
                f"instead; '{key}' is over the limit.",
                param=name,
                code="object_above_max_properties",
            )
        if len(key) > METADATA_MAX_KEY:
            raise invalid(
                f"Invalid '{param}': key '{key}' is too long. Expected a key with maximum length "
                f"{METADATA_MAX_KEY}, but got a key with length {len(key)} instead.",
                param=name,
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise _wrong_type(f"'{name}'", "a string", value, name)
        if len(value) > METADATA_MAX_VALUE:
            raise _bad_length(f"'{name}'", "string", "maximum", METADATA_MAX_VALUE, len(value), name)
