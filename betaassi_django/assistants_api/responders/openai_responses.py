"""A real model through the Responses API (``client.responses.create(stream=True)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .interface import ContextMessage, Reply, ResponderError, ResponderRequest, ToolCall, ToolRound
from .upstream import (
    new_call_id,
    open_stream,
    refusal,
    sampling,
    text_format,
    tool_choice,
    translated_errors,
    wants_reasoning_items,
)

#: Responses' least ``max_output_tokens``: a smaller budget left over a run's rounds is sent as this.
MIN_OUTPUT_TOKENS = 16

#: Upstream error codes a run's ``last_error`` can carry as they are; any other is a ``server_error``.
RUN_ERROR_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")


def input_items(request: ResponderRequest) -> list[dict]:
    """The thread and this run's earlier function calls and outputs, as Responses input items."""
    items: list[dict] = []
    for entry in request.messages:
        if isinstance(entry, ContextMessage):
            items.append({"role": entry.role, "content": entry.text})
        elif isinstance(entry, ToolRound):
            items += entry.carried  # the reasoning that led to the calls, as the upstream returned it
            items += [{"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                      for c in entry.calls]
            items += [{"type": "function_call_output", "call_id": c.id, "output": c.output or ""}
                      for c in entry.calls]
    return items


def params(request: ResponderRequest) -> dict:
    values: dict = {"model": request.model, "input": input_items(request), "store": False}
    if request.instructions:
        values["instructions"] = request.instructions
    values.update(sampling(request))
    tools = request.function_tools
    if tools:
        values["tools"] = [{"type": "function", "name": t["function"]["name"],
                            "description": t["function"].get("description") or "",
                            "parameters": t["function"].get("parameters") or {"type": "object", "properties": {}},
                            "strict": bool(t["function"].get("strict"))} for t in tools]
        values["tool_choice"] = tool_choice(request.tool_choice, flat=True)
        values["parallel_tool_calls"] = request.parallel_tool_calls
    text = text_format(request.response_format)
    if text is not None:
        values["text"] = {"format": text}
    if request.max_completion_tokens is not None:
        values["max_output_tokens"] = max(request.max_completion_tokens, MIN_OUTPUT_TOKENS)
    if request.reasoning_effort:
        values["reasoning"] = {"effort": request.reasoning_effort}
    if wants_reasoning_items(request):
        values["include"] = ["reasoning.encrypted_content"]
    return values


class ResponsesResponder:
    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str | ToolCall]:
        refused: list[str] = []
        async with translated_errors():
            # The raw event stream, as dicts (``open_stream``): the SDK's ``responses.stream`` helper would also
            # build a snapshot of the whole response on every event, which the run does not need.
            events = await open_stream("/responses", {**params(request), "stream": True})
            async with events:
                async for event in events:
                    kind = event.get("type")
                    if kind == "response.output_text.delta":
                        yield event["delta"]
                    elif kind == "response.refusal.delta":
                        refused.append(event["delta"])
                    elif kind == "response.output_item.done" and event["item"].get("type") == "function_call":
                        item = event["item"]
                        yield ToolCall(item.get("call_id") or new_call_id(), item["name"],
                                       item.get("arguments") or "{}")
                    elif kind == "response.output_item.done" and event["item"].get("type") == "reasoning":
                        if event["item"].get("encrypted_content"):  # with store false, the only kind sent back
                            reply.carried_items.append(event["item"])
                    elif kind in ("response.completed", "response.incomplete", "response.failed"):
                        usage = event["response"].get("usage")
                        if usage:
                            reply.prompt_tokens += usage.get("input_tokens") or 0
                            reply.completion_tokens += usage.get("output_tokens") or 0
                        if kind == "response.incomplete" and (event["response"].get("incomplete_details") or {}).get(
                                "reason") == "max_output_tokens":
                            reply.incomplete = "max_completion_tokens"
                        if kind == "response.failed":
                            error = event["response"].get("error") or {}
                            code = error.get("code") if error.get("code") in RUN_ERROR_CODES else "server_error"
                            raise ResponderError(code, f"The upstream model failed: "
                                                       f"{error.get('message') or 'no reason given'}")
                    elif kind == "error":
                        raise ResponderError("server_error", f"The upstream model failed: {event.get('message')}")
        if refused:
            raise refusal("".join(refused))
