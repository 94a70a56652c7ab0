"""What a responder is given, what it yields and fills in, and how it fails: the contract between the run's
execution and every responder (``echo``, the upstream ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ContextMessage:
    role: str
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; ``output`` is set once the client submitted it."""

    id: str
    name: str
    arguments: str
    output: str | None = None


@dataclass(frozen=True)
class ToolRound:
    """Function calls of this run the model made earlier, with their outputs (a continued run)."""

    calls: list[ToolCall]
    #: Upstream items the model returned with these calls, sent back before them (Responses reasoning items).
    carried: list = field(default_factory=list)


@dataclass(frozen=True)
class ResponderRequest:
    """What a responder is given: the run's settings, the truncated thread, then this run's own turns so far."""

    model: str
    instructions: str
    messages: list[ContextMessage | ToolRound]
    temperature: float | None = None
    top_p: float | None = None
    tools: list = field(default_factory=list)
    parallel_tool_calls: bool = True
    tool_choice: str | dict | None = None
    #: ``auto``, or ``{"type": "text" | "json_object" | "json_schema", ...}`` as the Assistants API takes it.
    response_format: str | dict | None = None
    #: What is left of the run's ``max_completion_tokens`` for this model call (None: no limit).
    max_completion_tokens: int | None = None
    reasoning_effort: str | None = None
    #: A token limit reached before the model is asked (``max_prompt_tokens`` / ``max_completion_tokens``):
    #: the run ends ``incomplete`` for it, and no responder is called.
    limit_reached: str | None = None
    #: The run offers the app's file search: the function tool named ``file_search`` in ``tools`` is it
    #: (``knowledge.run_search``).
    search: bool = False

    @property
    def thread_messages(self) -> list[ContextMessage]:
        return [m for m in self.messages if isinstance(m, ContextMessage)]

    @property
    def function_tools(self) -> list[dict]:
        """The run's function tools (the only kind a model endpoint executes through the client)."""
        return [t for t in self.tools if t.get("type") == "function"]


@dataclass
class Reply:
    """Filled in by a responder as it streams."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The reply stopped at a token limit: the run's ``incomplete_details.reason`` (``max_completion_tokens``).
    incomplete: str | None = None
    #: Upstream items to send back with this round's function calls (reasoning items), as the upstream gave them.
    carried_items: list = field(default_factory=list)


class ResponderError(Exception):
    """Ends the run ``failed`` with ``last_error = {"code": code, "message": message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Responder(Protocol):
    def stream(self, request: ResponderRequest, reply: Reply) -> AsyncIterator[str | ToolCall]: ...
