"""Handlers of the embedded Assistants API (``endpoint()`` makes them async views); the work is in ``store``.

Each handler first checks the API key's scope (``scopes``: the read-only check is done for every handler by
``endpoint()``), so a request outside it is a 403 before the store is touched.
"""

from __future__ import annotations

from django.http import HttpRequest

from . import scopes, serializers, store
from .engine import engine
from .http import read_body
from .ids import new_id
from .streaming import RunEventStream, SSEResponse


def _assistant(request: HttpRequest, assistant_id: str) -> None:
    scopes.check_assistant(scopes.of_request(request), assistant_id)


def _thread(request: HttpRequest, thread_id: str, *, write: bool = False, publishing: bool = False) -> None:
    scopes.check_thread(scopes.of_request(request), thread_id, write=write, publishing=publishing)


# Assistants


def list_assistants(request: HttpRequest) -> dict:
    return store.list_assistants(request.GET, scopes.of_request(request).assistant_ids)


def create_assistant(request: HttpRequest) -> dict:
    scopes.check_create_assistant(scopes.of_request(request))
    return store.create_assistant(read_body(request, "CreateAssistantRequest"))


def retrieve_assistant(request: HttpRequest, assistant_id: str) -> dict:
    _assistant(request, assistant_id)
    return serializers.assistant(store.get_assistant(assistant_id))


def modify_assistant(request: HttpRequest, assistant_id: str) -> dict:
    _assistant(request, assistant_id)
    body = read_body(request, "ModifyAssistantRequest")
    scopes.check_assistant_change(scopes.of_request(request), assistant_id, body)
    return store.modify_assistant(assistant_id, body)


def delete_assistant(request: HttpRequest, assistant_id: str) -> dict:
    _assistant(request, assistant_id)
    return store.delete_assistant(assistant_id)


# Threads


def create_thread(request: HttpRequest) -> dict:
    body = read_body(request, "CreateThreadRequest")
    scopes.check_new_thread(scopes.of_request(request), body.get("metadata"))
    return store.create_thread(body)


def retrieve_thread(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return serializers.thread(store.get_thread(thread_id))


def modify_thread(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id, write=True)
    body = read_body(request, "ModifyThreadRequest")
    if "metadata" in body:
        scopes.check_new_thread(scopes.of_request(request), body["metadata"])
    return store.modify_thread(thread_id, body)


def delete_thread(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id, write=True)
    return store.delete_thread(thread_id)


# Messages


def list_messages(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return store.list_messages(thread_id, request.GET)


def create_message(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id, write=True, publishing=True)
    return store.create_message(thread_id, read_body(request, "CreateMessageRequest"))


def retrieve_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    _thread(request, thread_id)
    return store.retrieve_message(thread_id, message_id)


def modify_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    _thread(request, thread_id, write=True)
    return store.modify_message(thread_id, message_id, read_body(request, "ModifyMessageRequest"))


def delete_message(request: HttpRequest, thread_id: str, message_id: str) -> dict:
    _thread(request, thread_id, write=True)
    return store.delete_message(thread_id, message_id)


# Runs


def _start_run(body: dict, create) -> dict | SSEResponse:
    """Create a run; with ``stream: true`` answer with its event stream.

    The stream is subscribed to before the run exists, so that no event the
    engine emits can be missed.
    """
    run_id = new_id("run")
    if not body.get("stream"):
        return create(run_id)[-1]
    events = engine.subscribe(run_id)
    try:
        created = create(run_id)
    except BaseException:
        engine.unsubscribe(run_id, events)
        raise
    prelude = [("thread.created", created[0])] if len(created) == 2 else []
    run = created[-1]
    prelude += [("thread.run.created", run), ("thread.run.queued", run)]
    return SSEResponse(RunEventStream(run_id, events, prelude))


def list_runs(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return store.list_runs(thread_id, request.GET)


def create_run(request: HttpRequest, thread_id: str) -> dict | SSEResponse:
    _thread(request, thread_id, write=True)
    store.check_include(request.GET)
    body = read_body(request, "CreateRunRequest")
    _assistant(request, body["assistant_id"])
    return _start_run(body, lambda run_id: (store.create_run(thread_id, run_id, body),))


def create_thread_and_run(request: HttpRequest) -> dict | SSEResponse:
    body = read_body(request, "CreateThreadAndRunRequest")
    _assistant(request, body["assistant_id"])
    scopes.check_new_thread(scopes.of_request(request), (body.get("thread") or {}).get("metadata"))
    return _start_run(body, lambda run_id: store.create_thread_and_run(run_id, body))


def retrieve_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    _thread(request, thread_id)
    return store.retrieve_run(thread_id, run_id)


def modify_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    _thread(request, thread_id, write=True)
    return store.modify_run(thread_id, run_id, read_body(request, "ModifyRunRequest"))


def cancel_run(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    _thread(request, thread_id, write=True)
    return store.cancel_run(thread_id, run_id)


def submit_tool_outputs(request: HttpRequest, thread_id: str, run_id: str) -> dict | SSEResponse:
    """Continue a run in ``requires_action``; with ``stream: true`` answer with the rest of its events."""
    _thread(request, thread_id, write=True)
    body = read_body(request, "SubmitToolOutputsRunRequest")
    if not body.get("stream"):
        return store.submit_tool_outputs(thread_id, run_id, body)[0]
    events = engine.subscribe(run_id)
    try:
        _, prelude = store.submit_tool_outputs(thread_id, run_id, body)
    except BaseException:
        engine.unsubscribe(run_id, events)
        raise
    return SSEResponse(RunEventStream(run_id, events, prelude))


# Run steps


def list_run_steps(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    _thread(request, thread_id)
    store.check_include(request.GET)
    return store.list_steps(thread_id, run_id, request.GET)


def retrieve_run_step(request: HttpRequest, thread_id: str, run_id: str, step_id: str) -> dict:
    _thread(request, thread_id)
    store.check_include(request.GET)
    return store.get_step(thread_id, run_id, step_id)
