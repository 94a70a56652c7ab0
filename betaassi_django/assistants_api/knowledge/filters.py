"""The specification's attribute filters (``ComparisonFilter``, ``CompoundFilter``) over a vector store file's
``attributes``.

Values compare by JSON type: a number only with a number (``true`` is not ``1``), a string with a string (``gt``
and the like order strings by code point, so ISO dates compare as dates), a boolean only by ``eq``/``ne``. A
file without the key matches only ``ne`` and ``nin``.
"""

from __future__ import annotations

from ..errors import invalid

_ORDER = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
          "lte": lambda a, b: a <= b}


def check(node: dict, param: str = "filters") -> None:
    """What the schema cannot say: ``in``/``nin`` take an array, the other comparisons a single value."""
    kind = node.get("type")
    if kind in ("and", "or"):
        for index, child in enumerate(node.get("filters", [])):
            check(child, f"{param}.filters[{index}]")
        return
    is_list = isinstance(node.get("value"), list)
    if kind in ("in", "nin") and not is_list:
        raise invalid(f"Invalid value for '{param}.value': the '{kind}' comparison takes an array of values.",
                      param=f"{param}.value", code="invalid_value")
    if kind not in ("in", "nin") and is_list:
        raise invalid(f"Invalid value for '{param}.value': the '{kind}' comparison takes a string, a number or a "
                      "boolean, not an array.", param=f"{param}.value", code="invalid_value")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _equal(a, b) -> bool:
    return _kind(a) == _kind(b) and a == b


def matches(node: dict, attributes: dict | None) -> bool:
    """Whether a file with these ``attributes`` passes the (checked) filter ``node``."""
    kind = node.get("type", "eq")
    if kind == "and":
        return all(matches(child, attributes) for child in node["filters"])
    if kind == "or":
        return any(matches(child, attributes) for child in node["filters"])
    attributes = attributes or {}
    present = node["key"] in attributes
    actual, value = attributes.get(node["key"]), node["value"]
    if kind == "eq":
        return present and _equal(actual, value)
    if kind == "ne":
        return not (present and _equal(actual, value))
    if kind == "in":
        return present and any(_equal(actual, item) for item in value)
    if kind == "nin":
        return not (present and any(_equal(actual, item) for item in value))
    if not present or _kind(actual) != _kind(value) or _kind(value) not in ("number", "string"):
        return False
    return _ORDER[kind](actual, value)
