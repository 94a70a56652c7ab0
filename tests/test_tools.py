"""Function tools: schemas from annotations and docstrings, and executing the calls a run asks for."""

from __future__ import annotations

import asyncio
import enum
import json
import time
from types import SimpleNamespace
from typing import Optional

import pydantic
import pytest

from betaassi_django.tools import as_tools, merge_tool_definitions, openai_function, run_tool_calls


class Unit(enum.Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Place(pydantic.BaseModel):
    city: str
    country: str | None = None


@openai_function
def get_weather(place: Place, unit: Unit = Unit.celsius, days: list[int] | None = None, hourly: bool = False,
                limit: Optional[float] = None, note: str = "") -> dict:  # noqa: UP045 (Optional is supported too)
    """The weather at a place.

    Forecasts come from the test double.

    Args:
        place: Where to look.
        unit: The unit of
            temperatures.
        days (list): Days ahead.

    Returns:
        A forecast.
    """
    return {"city": place.city, "unit": unit.value, "days": days or [], "hourly": hourly, "limit": limit}


def test_schema_from_annotations_and_docstring():
    assert get_weather.schema == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather at a place.\n\nForecasts come from the test double.",
            "parameters": {
                "$defs": {
                    "Place": {"type": "object", "required": ["city"], "properties": {
                        "city": {"type": "string"},
                        "country": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}}},
                    "Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
                },
                "type": "object",
                "additionalProperties": False,
                "required": ["place"],
                "properties": {
                    "place": {"$ref": "#/$defs/Place", "description": "Where to look."},
                    "unit": {"$ref": "#/$defs/Unit", "default": "celsius", "description": "The unit of temperatures."},
                    "days": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
                             "default": None, "description": "Days ahead."},
                    "hourly": {"type": "boolean", "default": False},
                    "limit": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
                    "note": {"type": "string", "default": ""},
                },
            },
        },
    }
    # Still an ordinary function.
    assert get_weather(Place(city="Oslo"))["city"] == "Oslo"


def test_a_property_named_title_is_kept():
    @openai_function(name="make-book", description="Make a book.")
    def make_book(title: str, pages: int) -> str:
        return f"{title}:{pages}"

    assert make_book.schema["function"]["name"] == "make-book"
    assert make_book.schema["function"]["description"] == "Make a book."
    assert make_book.parameters == {"type": "object", "additionalProperties": False, "required": ["title", "pages"],
                                    "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}}}


def test_bad_functions_are_refused_when_declared():
    with pytest.raises(TypeError, match="annotate parameter 'city'"):
        openai_function(name="echo")(lambda city: city)
    with pytest.raises(TypeError, match="'args' must be an ordinary keyword parameter"):
        @openai_function
        def spread(*args: int) -> None: ...
    with pytest.raises(ValueError, match="function tool name '<lambda>'"):
        openai_function(lambda: None)  # '<lambda>' is no tool name
    with pytest.raises(ValueError, match="two function tools have the same name"):
        as_tools([get_weather, openai_function(name="get_weather")(lambda: None)])


def test_merge_replaces_a_definition_of_the_same_name():
    declared = [{"type": "code_interpreter"}, {"type": "function", "function": {"name": "get_weather"}},
                {"type": "function", "function": {"name": "other"}}]
    merged = merge_tool_definitions(declared, [get_weather])
    assert merged == [{"type": "code_interpreter"}, {"type": "function", "function": {"name": "other"}},
                      get_weather.schema]


def _call(call_id: str, name: str, arguments: str):
    return SimpleNamespace(id=call_id, function=SimpleNamespace(name=name, arguments=arguments))


async def test_run_tool_calls_executes_converts_and_reports_errors():
    @openai_function
    async def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @openai_function
    def explode(reason: str) -> str:
        raise RuntimeError(reason)

    @openai_function
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    @openai_function
    def place_of(place: Place) -> Place:
        return place

    tools = as_tools([add, explode, nap, place_of, get_weather])
    started = time.monotonic()
    outputs = await run_tool_calls(tools, [
        _call("call_1", "add", '{"a": 2, "b": 40}'),
        _call("call_2", "explode", '{"reason": "no fuel"}'),
        _call("call_3", "nap", '{"seconds": 1}'),
        _call("call_4", "missing", "{}"),
        _call("call_5", "add", '{"a": "two"}'),
        _call("call_6", "get_weather", '{"place": {"city": "Oslo"}, "unit": "fahrenheit", "days": [1, 2]}'),
        _call("call_7", "place_of", '{"place": {"city": "Rome", "country": "IT"}}'),
        _call("call_8", "nap", '{"seconds": 0}'),
    ], timeout=0.3)
    assert time.monotonic() - started < 1.5  # concurrent, and the slow one was not waited for
    by_id = {o["tool_call_id"]: o["output"] for o in outputs}
    assert [o["tool_call_id"] for o in outputs] == [f"call_{n}" for n in range(1, 9)]
    assert by_id["call_1"] == "42"
    assert json.loads(by_id["call_2"]) == {"error": "RuntimeError: no fuel"}
    assert json.loads(by_id["call_3"]) == {"error": "function 'nap' timed out after 0.3 s"}
    assert json.loads(by_id["call_4"]) == {"error": "unknown function 'missing'"}
    assert json.loads(by_id["call_5"])["error"].startswith("invalid arguments for 'add': ")
    assert "'int_parsing'" in by_id["call_5"] and "'missing'" in by_id["call_5"]
    assert json.loads(by_id["call_6"]) == {"city": "Oslo", "unit": "fahrenheit", "days": [1, 2], "hourly": False,
                                           "limit": None}
    assert json.loads(by_id["call_7"]) == {"city": "Rome", "country": "IT"}
    assert by_id["call_8"] == "rested"
    await asyncio.sleep(0)


async def test_the_default_timeout_is_the_setting(settings):
    settings.BETAASSI_TOOL_TIMEOUT = 0.05

    @openai_function
    async def slow() -> str:
        await asyncio.sleep(1)
        return "late"

    outputs = await run_tool_calls(as_tools([slow]), [_call("call_1", "slow", "")])
    assert json.loads(outputs[0]["output"]) == {"error": "function 'slow' timed out after 0.05 s"}
