"""The run options that shape what a responder is given: ``max_prompt_tokens``, ``max_completion_tokens``;
``tool_choice`` and ``response_format`` as creation checks them.

The prompt is counted with OpenAI's own tokenizer (``tokens.count``, o200k_base) as the Chat Completions format
counts it (OpenAI's cookbook): each message costs its text's tokens plus ``PER_MESSAGE`` (its role and
delimiters), and the reply's priming ``REPLY_PRIMING``. A function call counts its name and arguments, its
output its text, each with ``PER_MESSAGE``. Reasoning items carried back are opaque (encrypted): not counted.
"""

from __future__ import annotations

import re

from . import tokens
from .errors import invalid
from .models import Run, RunStep
from .responders.interface import ContextMessage, ToolRound

PER_MESSAGE = 3
REPLY_PRIMING = 3


def entry_tokens(entry: ContextMessage | ToolRound | str) -> int:
    """The prompt tokens of one message, one round of calls with their outputs, or the instructions."""
    if isinstance(entry, str):
        return tokens.count(entry) + PER_MESSAGE if entry else 0
    if isinstance(entry, ContextMessage):
        return tokens.count(entry.text) + PER_MESSAGE
    return sum(tokens.count(c.name) + tokens.count(c.arguments) + tokens.count(c.output or "") + 2 * PER_MESSAGE
               for c in entry.calls)


def fit(instructions: str, context: list[ContextMessage], transcript: list, limit: int | None
        ) -> tuple[list[ContextMessage], bool]:
    """The thread's messages that fit ``limit`` prompt tokens with the instructions and this run's own turns,
    dropping the oldest first; and whether the prompt fits at all (False: not even the newest thread message
    fits; the run then ends ``incomplete`` without asking the model)."""
    if limit is None or _bound(instructions, context, transcript) <= limit:
        return context, True
    total = REPLY_PRIMING + entry_tokens(instructions) + sum(entry_tokens(t) for t in transcript)
    if total > limit:
        return context, False
    kept: list[ContextMessage] = []
    for message in reversed(context):
        total += entry_tokens(message)
        if total > limit:
            break
        kept.append(message)
    if context and not kept:
        return context, False
    return kept[::-1], True


def _bound(instructions: str, context: list[ContextMessage], transcript: list) -> int:
    """An upper bound of the prompt's tokens, counted as ``entry_tokens`` counts them but in UTF-8 bytes (a token
    is at least one byte). A prompt within the limit by this bound is within it exactly, the usual case: the
    tokenizer (its ranks take a second to load, once per process) then stays off the run's start."""
    def size(text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass"))

    total = REPLY_PRIMING + (size(instructions) + PER_MESSAGE if instructions else 0)
    for entry in [*context, *transcript]:
        if isinstance(entry, ContextMessage):
            total += size(entry.text) + PER_MESSAGE
        else:
            total += sum(size(c.name + c.arguments + (c.output or "")) + 2 * PER_MESSAGE for c in entry.calls)
    return total


def completion_budget(run: Run, first: bool) -> int | None:
    """What is left of the run's ``max_completion_tokens`` (a limit over the whole run, as OpenAI's): the limit
    less the completion tokens of its earlier model calls (recorded on its steps)."""
    if run.max_completion_tokens is None:
        return None
    if first:
        return run.max_completion_tokens
    used = sum(u["completion_tokens"] for u in RunStep.objects.filter(run=run).exclude(usage=None)
               .values_list("usage", flat=True))
    return run.max_completion_tokens - used


def check_tool_choice(tool_choice, tools: list) -> None:
    """A ``tool_choice`` naming a function must name one of the run's tools (a model endpoint refuses the call
    otherwise): a 400 at the run's creation rather than a run failed later."""
    if not (isinstance(tool_choice, dict) and tool_choice.get("type") == "function"):
        return
    name = (tool_choice.get("function") or {}).get("name")
    if name not in {t["function"]["name"] for t in tools if t.get("type") == "function"}:
        raise invalid(f"Invalid value for 'tool_choice': function '{str(name)[:100]}' is not among the run's "
                      f"tools.", param="tool_choice", code="invalid_value")


#: What OpenAI takes as a json_schema's ``name`` (the specification says it in words: a-z, A-Z, 0-9, _ and -, at
#: most 64 characters): the upstream refuses others, so the API does at once.
SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]+")
SCHEMA_NAME_MAX = 64


def check_response_format(value, param: str = "response_format") -> None:
    """A ``json_schema`` response format's name, as OpenAI checks it (a 400 naming the param)."""
    if not (isinstance(value, dict) and value.get("type") == "json_schema"):
        return
    name, param = value["json_schema"]["name"], f"{param}.json_schema.name"
    if len(name) > SCHEMA_NAME_MAX:
        raise invalid(f"Invalid '{param}': string too long. Expected a string with maximum length {SCHEMA_NAME_MAX}, "
                      f"but got a string with length {len(name)} instead.", param=param,
                      code="string_above_max_length")
    if not SCHEMA_NAME.fullmatch(name):
        raise invalid(f"Invalid '{param}': string does not match pattern. Expected a string that matches the "
                      f"pattern '^[a-zA-Z0-9_-]+$'.", param=param, code="invalid_value")
