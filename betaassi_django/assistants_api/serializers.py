"""Store rows -> the JSON objects of OpenAI's specification."""

from __future__ import annotations

from .models import Assistant, Message, Run, RunStep, Thread


def assistant(a: Assistant) -> dict:
    return {
        "id": a.id,
        "object": "assistant",
        "created_at": a.created_at,
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": a.tools,
        "tool_resources": a.tool_resources,
        "metadata": a.metadata,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "response_format": a.response_format,
    }


def thread(t: Thread) -> dict:
    return {
        "id": t.id,
        "object": "thread",
        "created_at": t.created_at,
        "metadata": t.metadata,
        "tool_resources": t.tool_resources,
    }


def message(m: Message, thread_id: str | None = None) -> dict:
    return {
        "id": m.id,
        "object": "thread.message",
        "created_at": m.created_at,
        "thread_id": thread_id or m.thread.id,
        "status": m.status,
        "incomplete_details": m.incomplete_details,
        "completed_at": m.completed_at,
        "incomplete_at": m.incomplete_at,
        "role": m.role,
        "content": m.content,
        "assistant_id": m.assistant_id,
        "run_id": m.run_id,
        "attachments": m.attachments,
        "metadata": m.metadata,
    }


def run(r: Run, thread_id: str | None = None) -> dict:
    return {
        "id": r.id,
        "object": "thread.run",
        "created_at": r.created_at,
        "thread_id": thread_id or r.thread.id,
        "assistant_id": r.assistant_id,
        "status": r.status,
        "required_action": r.required_action,
        "last_error": r.last_error,
        "expires_at": r.expires_at,
        "started_at": r.started_at,
        "cancelled_at": r.cancelled_at,
        "failed_at": r.failed_at,
        "completed_at": r.completed_at,
        "incomplete_details": r.incomplete_details,
        "model": r.model,
        "instructions": r.instructions,
        "tools": r.tools,
        "metadata": r.metadata,
        "usage": r.usage,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "max_prompt_tokens": r.max_prompt_tokens,
        "max_completion_tokens": r.max_completion_tokens,
        "truncation_strategy": r.truncation_strategy,
        "tool_choice": r.tool_choice,
        "parallel_tool_calls": r.parallel_tool_calls,
        "response_format": r.response_format,
    }


def run_step(s: RunStep, run_id: str | None = None) -> dict:
    return {
        "id": s.id,
        "object": "thread.run.step",
        "created_at": s.created_at,
        "assistant_id": s.assistant_id,
        "thread_id": s.thread_id,
        "run_id": run_id or s.run.id,
        "type": s.type,
        "status": s.status,
        "step_details": s.step_details,
        "last_error": s.last_error,
        "expired_at": s.expired_at,
        "cancelled_at": s.cancelled_at,
        "failed_at": s.failed_at,
        "completed_at": s.completed_at,
        "metadata": s.metadata,
        "usage": s.usage,
    }


def deleted(object_type: str, object_id: str) -> dict:
    return {"id": object_id, "object": f"{object_type}.deleted", "deleted": True}
