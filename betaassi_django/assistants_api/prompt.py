"""What a run's responder is given: the run's settings, the thread after truncation, the run's own turns."""

from __future__ import annotations

from . import run_options, statements
from .models import Message, Run, RunStep
from .responders.interface import ContextMessage, ResponderRequest, ToolCall, ToolRound


def _text_of(message: Message) -> str:
    return _text(message.content)


def _text(content: list) -> str:
    return "\n".join(p["text"]["value"] for p in content if p.get("type") == "text")


def _context(run: Run) -> list[ContextMessage]:
    """The thread's messages the responder sees, after the truncation strategy (this run's own excluded); only
    their role and content are read (a thread's whole history is read at every run's start)."""
    strategy = run.truncation_strategy or {}
    limit = strategy.get("last_messages") if strategy.get("type") == "last_messages" else None
    messages = statements.history(run.thread_id, run.id, limit or None)  # SQL compiled once
    return [ContextMessage(role, _text(content)) for role, content in reversed(messages)]


def _call(c: dict) -> ToolCall:
    """A function call, or a file_search call the app answered (stored with the model's arguments and the output
    it was given: ``knowledge.run_search``)."""
    if c.get("type") == "file_search":
        return ToolCall(c["id"], "file_search", c.get("arguments") or "{}", c.get("output") or "")
    return ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"], c["function"]["output"])


def _transcript(run: Run) -> list[ContextMessage | ToolRound]:
    """This run's earlier turns, in order: its text so far, its function calls with their outputs."""
    turns: list[ContextMessage | ToolRound] = []
    for step in RunStep.objects.filter(run=run).order_by("seq"):
        details = step.step_details
        if step.type == "message_creation":
            message = Message.objects.filter(id=details["message_creation"]["message_id"]).first()
            if message is not None and _text_of(message):
                turns.append(ContextMessage("assistant", _text_of(message)))
        elif step.type == "tool_calls":
            turns.append(ToolRound([_call(c) for c in details["tool_calls"]],
                                   step.carried_items or []))
    return turns


def responder_request(run: Run, first: bool = False) -> ResponderRequest:
    """``first``: the run's first execution, which has no turns of its own yet (their query is skipped)."""
    instructions = "\n\n".join(filter(None, [run.instructions, run.additional_instructions]))
    transcript = [] if first else _transcript(run)
    # max_prompt_tokens: the oldest thread messages left out until the prompt fits (run_options.fit).
    context, fits = run_options.fit(instructions, _context(run), transcript, run.max_prompt_tokens)
    budget = run_options.completion_budget(run, first)
    limit_reached = None if fits else "max_prompt_tokens"
    if limit_reached is None and budget is not None and budget <= 0:
        limit_reached = "max_completion_tokens"
    return ResponderRequest(
        model=run.model,
        instructions=instructions,
        messages=[*context, *transcript],
        temperature=run.temperature,
        top_p=run.top_p,
        tools=run.tools,
        parallel_tool_calls=run.parallel_tool_calls,
        tool_choice=run.tool_choice,
        response_format=run.response_format,
        max_completion_tokens=budget,
        reasoning_effort=run.reasoning_effort,
        limit_reached=limit_reached,
    )
