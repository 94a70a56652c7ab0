"""Function tools: Python functions described to the model from their annotations and docstrings.

::

    @openai_function
    def get_weather(city: str, unit: Unit = Unit.celsius) -> dict:
        '''The current weather in a city.

        Args:
            city: The city's name, e.g. "Paris".
            unit: The temperature unit.
        '''

    class Support(BaseAssistant):
        function_tools = [get_weather]

The schema (``tool.schema``) is the Assistants / Chat Completions tool
definition ``{"type": "function", "function": {"name", "description",
"parameters"}}``; parameters are the JSON schema pydantic makes from the
annotations (str, int, float, bool, enums, lists, ``Optional``, pydantic models).
``run_tool_calls`` executes a run's requested calls: concurrently, each with a
timeout, and a function that raises, times out, is unknown or gets bad
arguments yields an error output for the model instead of an exception.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core

logger = logging.getLogger("betaassi_django.tools")

#: Assistants API limit on function names.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # used with fullmatch
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before the sections) and the ``Args:`` descriptions of a Google-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section, current = None, None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section, current = header[1].lower(), None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters", "params"):
            match = _ARG_LINE.match(line)
            if match and (len(line) - len(line.lstrip())) <= 4:
                current = match[1]
                params[current] = match[2].strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), params


def _without_titles(node: Any, in_properties: bool = False) -> Any:
    """pydantic's JSON schema minus its generated ``title`` keys (noise for the model)."""
    if isinstance(node, dict):
        return {
            key: _without_titles(value, key in ("properties", "$defs") and not in_properties)
            for key, value in node.items()
            if in_properties or not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_titles(value) for value in node]
    return node


@dataclass(frozen=True)
class FunctionTool:
    """A Python function the model may call; make one with ``@openai_function``."""

    function: Callable[..., Any]
    name: str
    description: str
    arguments: type[pydantic.BaseModel] = field(repr=False)

    @property
    def parameters(self) -> dict:
        return _without_titles(self.arguments.model_json_schema())

    @property
    def schema(self) -> dict:
        """The tool definition sent to the backend and the model."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    async def call(self, arguments: str) -> Any:
        """Call with the model's JSON arguments, validated and converted by the annotations."""
        try:
            values = self.arguments.model_validate_json(arguments or "{}")
        except pydantic.ValidationError as exc:
            raise InvalidArguments(exc.errors(include_url=False, include_context=False)) from None
        kwargs = {name: getattr(values, name) for name in type(values).model_fields}
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        # A sync function runs in a worker thread, so it cannot block the event loop.
        return await asyncio.to_thread(self.function, **kwargs)


class InvalidArguments(ValueError):
    pass


def openai_function(function: Callable | None = None, *, name: str | None = None,
                    description: str | None = None) -> Any:
    """Describe ``function`` to the model: ``@openai_function`` or ``@openai_function(name=..., description=...)``.

    Every parameter must be annotated; the docstring's first part is the
    description and its ``Args:`` section describes the parameters.
    """

    def wrap(func: Callable) -> FunctionTool:
        if isinstance(func, FunctionTool):
            return func
        tool_name = name or func.__name__
        if not NAME_PATTERN.fullmatch(tool_name):
            raise ValueError(f"function tool name {tool_name!r}: use 1 to 64 letters, digits, '_' or '-'")
        summary, docs = _parse_docstring(func.__doc__)
        hints = typing.get_type_hints(func, include_extras=True)
        fields: dict[str, Any] = {}
        for param in inspect.signature(func).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise TypeError(f"{tool_name}: parameter {param.name!r} must be an ordinary keyword parameter")
            if param.name not in hints:
                raise TypeError(f"{tool_name}: annotate parameter {param.name!r} so its schema can be made")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], pydantic.Field(default, description=docs.get(param.name)))
        arguments = pydantic.create_model(f"{tool_name}_arguments", __config__=pydantic.ConfigDict(
            extra="forbid"), **fields)
        return FunctionTool(func, tool_name, description if description is not None else summary, arguments)

    return wrap(function) if function is not None else wrap


def as_tools(functions: Iterable[Callable | FunctionTool]) -> dict[str, FunctionTool]:
    """Functions (decorated or not) by tool name."""
    tools = [openai_function(f) for f in functions]
    by_name = {tool.name: tool for tool in tools}
    if len(by_name) != len(tools):
        raise ValueError("two function tools have the same name")
    return by_name


def merge_tool_definitions(declared: list[dict] | None, functions: Iterable[FunctionTool]) -> list[dict]:
    """``declared`` tool definitions with each function's schema put in (replacing one of the same name)."""
    schemas = [tool.schema for tool in functions]
    names = {schema["function"]["name"] for schema in schemas}
    kept = [t for t in declared or [] if not (t.get("type") == "function" and t.get("function", {}).get("name")
                                               in names)]
    return kept + schemas


# -- executing a run's tool calls ----------------------------------------------------------------------


def _error(message: str) -> str:
    return json.dumps({"error": message})


def _as_output(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump_json()
    return pydantic_core.to_json(result, fallback=str).decode()


async def call_tool(tools: dict[str, FunctionTool], name: str, arguments: str, timeout: float) -> tuple[str, bool]:
    """One call's output (the function's result, or an error the model can read) and whether the function
    returned (False: unknown, refused, raised or timed out)."""
    tool = tools.get(name)
    if tool is None:
        return _error(f"unknown function {name!r}"), False
    try:
        return _as_output(await asyncio.wait_for(tool.call(arguments), timeout)), True
    except TimeoutError:
        logger.warning("function tool %s timed out after %ss", name, timeout)
        return _error(f"function {name!r} timed out after {timeout:g} s"), False
    except InvalidArguments as exc:
        return _error(f"invalid arguments for {name!r}: {exc}"), False
    except Exception as exc:  # the model is told, the run goes on
        logger.warning("function tool %s raised %s", name, exc, exc_info=True)
        return _error(f"{type(exc).__name__}: {exc}"), False


#: ``report(call, ok)``: told before each call runs (``ok`` None) and after it (True: the function returned).
ToolReport = Callable[[Any, bool | None], Awaitable[None]]


async def _reported(tools: dict[str, FunctionTool], call: Any, timeout: float, report: ToolReport | None) -> str:
    if report is not None:
        await report(call, None)
    try:
        output, ok = await call_tool(tools, call.function.name, call.function.arguments, timeout)
    except asyncio.CancelledError:  # the run ended while it ran (``run_stream._outputs_unless_ended``)
        if report is not None:
            await report(call, False)
        raise
    if report is not None:
        await report(call, ok)
    return output


async def run_tool_calls(tools: dict[str, FunctionTool], tool_calls: Iterable[Any],
                         timeout: float | None = None, report: ToolReport | None = None) -> list[dict]:
    """Tool outputs for a run's ``required_action.submit_tool_outputs.tool_calls`` (SDK objects), concurrently;
    ``report`` (the WebSocket turns' ``tool.started`` / ``tool.completed``) hears of each call."""
    from betaassi_django import conf

    limit = conf.get().tool_timeout if timeout is None else timeout
    calls = list(tool_calls)
    outputs = await asyncio.gather(*(_reported(tools, c, limit, report) for c in calls))
    return [{"tool_call_id": c.id, "output": output} for c, output in zip(calls, outputs, strict=True)]


# -- which functions an assistant has ------------------------------------------------------------------

_labels: dict[str, str] = {}


def _functions_of(label: str | None) -> dict[str, FunctionTool]:
    from django.apps import apps

    if not label:
        return {}
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return {}
    return getattr(model, "function_tools_by_name", lambda: {})()


def assistant_functions(api, assistant_id: str) -> dict[str, FunctionTool]:
    """The function tools of the assistant's class (by its ``betaassi_type``); one retrieve per process."""
    if assistant_id not in _labels:
        _labels[assistant_id] = (api.beta.assistants.retrieve(assistant_id).metadata or {}).get("betaassi_type", "")
    return _functions_of(_labels[assistant_id])


async def aassistant_functions(api, assistant_id: str) -> dict[str, FunctionTool]:
    if assistant_id not in _labels:
        assistant = await api.beta.assistants.retrieve(assistant_id)
        _labels[assistant_id] = (assistant.metadata or {}).get("betaassi_type", "")
    return _functions_of(_labels[assistant_id])


async def outputs_for_run(api, run, report: ToolReport | None = None) -> list[dict]:
    """Execute the function calls a run in ``requires_action`` waits for; ``api`` is an async client."""
    functions = await aassistant_functions(api, run.assistant_id)
    return await run_tool_calls(functions, run.required_action.submit_tool_outputs.tool_calls, report=report)


def outputs_for_run_sync(api, run) -> list[dict]:
    """``outputs_for_run`` for sync code (``api`` is a sync client); sync functions still get a timeout."""
    from asgiref.sync import async_to_sync

    functions = assistant_functions(api, run.assistant_id)
    return async_to_sync(run_tool_calls)(functions, run.required_action.submit_tool_outputs.tool_calls)
