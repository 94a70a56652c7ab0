"""Async views of the embedded Assistants API; the work is in ``store``."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from . import store
from .engine import engine
from .http import read_body
from .ids import new_id
from .streaming import RunEventStream, SSEResponse


def _db(func):
    return sync_to_async(func)


# Assistants


async def list_assistants(request: HttpRequest) -> dict:
    return await _db(store.list_assistants)(request.GET)


async def create_assistant(request: HttpRequest) -> dict:
    return await _db(store.create_assistant)(read_body(request, "CreateAssistantRequest"))


async def retrieve_assistant(request: HttpRequest, assistant_id: str) -> dict:
    from .serializers import assistant

    return assistant(await _db(store.get_assistant)(assistant_id))


async def modify_assistant(request: HttpRequest, assistant_id: str) -> dict:
    return await _db(store.modify_assistant)(assistant_id, read_body(request, "ModifyAssistantRequest"))


async def delete_assistant(request: HttpRequest, assistant_id: str) -> dict:
    return await _db(store.delete_assistant)(assistant_id)


# Threads


async def create_thread(request: HttpRequest) -> dict:
    return await _db(store.create_thread)(read_body(request, "CreateThreadRequest"))


async def retrieve_thread(request: HttpRequest, thread_id: str) -> dict:
    from .serializers import thread

    return thread(await _db(store.get_thread)(thread_id))


async def modify_thread(request: HttpRequest, thread_id: str) -> dict:
    return await _db(store.modify_thread)(thread_id, read_body(request, "ModifyThreadRequest"))


async def delete_thread(request: HttpRequest, thread_id: str) -> dict:
    return await _db(store.delete_thread)(thread_id)


# Messages


async def list_messages(request: HttpRequest, thread_id: str) -> dict:
    return await _db(store.list_messages)(thread_id, request.GET)


async def create_message(request: HttpRequest, thread_id: str) -> dict:
    return await _db(store.create_message)(thread_id, read_body(request, "CreateMessageRequest"))


async def retrieve_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    return await _db(store.retrieve_message)(thread_id, message_id)


async def modify_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    return await _db(store.modify_message)(thread_id, message_id, read_body(request, "ModifyMessageRequest"))


async def delete_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    return await _db(store.delete_message)(thread_id, message_id)


# Runs


async def _start_run(body: dict, create) -> dict | SSEResponse:
    """Create a run; with ``stream: true`` answer with its event stream.

    The stream is subscribed to before the run exists, so that no event the
    engine emits can be missed.
    """
    run_id = new_id("run")
    if not body.get("stream"):
        return (await _db(create)(run_id))[-1]
    events = engine.subscribe(run_id)
    try:
        created = await _db(create)(run_id)
    except BaseException:
        engine.unsubscribe(run_id, events)
        raise
    prelude = [("thread.created", created[0])] if len(created) == 2 else []
    run = created[-1]
    prelude += [("thread.run.created", run), ("thread.run.queued", run)]
    return SSEResponse(RunEventStream(run_id, events, prelude))


async def list_runs(request: HttpRequest, thread_id: str) -> dict:
    return await _db(store.list_runs)(thread_id, request.GET)


async def create_run(request: HttpRequest, thread_id: str) -> dict | SSEResponse:
    store.check_include(request.GET)
    body = read_body(request, "CreateRunRequest")
    return await _start_run(body, lambda run_id: (store.create_run(thread_id, run_id, body),))


async def create_thread_and_run(request: HttpRequest) -> dict | SSEResponse:
    body = read_body(request, "CreateThreadAndRunRequest")
    return await _start_run(body, lambda run_id: store.create_thread_and_run(run_id, body))


async def retrieve_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    return await _db(store.retrieve_run)(thread_id, run_id)


async def modify_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    return await _db(store.modify_run)(thread_id, run_id, read_body(request, "ModifyRunRequest"))


async def cancel_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    return await _db(store.cancel_run)(thread_id, run_id)


async def submit_tool_outputs(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    return await _db(store.submit_tool_outputs)(thread_id, run_id, read_body(request, "SubmitToolOutputsRunRequest"))


# Run steps


async def list_run_steps(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    store.check_include(request.GET)
    return await _db(store.list_steps)(thread_id, run_id, request.GET)


async def retrieve_run_step(request: HttpRequest, thread_id: str, run_id: str, step_id: str) -> dict:
    store.check_include(request.GET)
    return await _db(store.get_step)(thread_id, run_id, step_id)
