"""A real model through Chat Completions (Ollama, vLLM, LM Studio and other compatible servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .interface import ContextMessage, Reply, ResponderRequest, ToolCall, ToolRound
from .upstream import chat_response_format, new_call_id, open_stream, refusal, sampling, tool_choice, translated_errors


def chat_messages(request: ResponderRequest) -> list[dict]:
    """Instructions as the system message, then the thread, then this run's calls and tool messages."""
    messages: list[dict] = [{"role": "system", "content": request.instructions}] if request.instructions else []
    for entry in request.messages:
        if isinstance(entry, ContextMessage):
            messages.append({"role": entry.role, "content": entry.text})
        elif isinstance(entry, ToolRound):
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in entry.calls]})
            messages += [{"role": "tool", "tool_call_id": c.id, "content": c.output or ""} for c in entry.calls]
    return messages


def params(request: ResponderRequest) -> dict:
    values: dict = {"model": request.model, "messages": chat_messages(request), "stream": True,
                    "stream_options": {"include_usage": True}}
    values.update(sampling(request))
    tools = request.function_tools
    if tools:
        values["tools"] = tools
        values["tool_choice"] = tool_choice(request.tool_choice, flat=False)
        values["parallel_tool_calls"] = request.parallel_tool_calls
    response_format = chat_response_format(request.response_format)
    if response_format is not None:
        values["response_format"] = response_format
    if request.max_completion_tokens is not None:
        values["max_completion_tokens"] = max(request.max_completion_tokens, 1)
    if request.reasoning_effort:
        values["reasoning_effort"] = request.reasoning_effort
    return values


class ChatCompletionsResponder:
    async def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str | ToolCall]:
        calls: dict[int, dict] = {}
        refused: list[str] = []
        async with translated_errors():
            chunks = await open_stream("/chat/completions", params(request))  # chunks as dicts
            async with chunks:
                async for chunk in chunks:
                    usage = chunk.get("usage")
                    if usage:
                        reply.prompt_tokens += usage.get("prompt_tokens") or 0
                        reply.completion_tokens += usage.get("completion_tokens") or 0
                    for choice in (chunk.get("choices") or [])[:1]:
                        if choice.get("finish_reason") == "length":  # stopped at max_completion_tokens
                            reply.incomplete = "max_completion_tokens"
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield delta["content"]
                        if delta.get("refusal"):
                            refused.append(delta["refusal"])
                        for part in delta.get("tool_calls") or []:
                            call = calls.setdefault(part.get("index", 0), {"id": "", "name": "", "arguments": ""})
                            call["id"] = part.get("id") or call["id"]
                            function = part.get("function")
                            if function is not None:
                                call["name"] += function.get("name") or ""
                                call["arguments"] += function.get("arguments") or ""
        if refused:
            raise refusal("".join(refused))
        for index in sorted(calls):
            call = calls[index]
            yield ToolCall(call["id"] or new_call_id(), call["name"], call["arguments"] or "{}")
