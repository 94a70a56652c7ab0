"""Handlers of the embedded Assistants API (``endpoint()`` makes them async views); the work is in ``store``.

Each handler first checks the API key's scope (``scopes``: the read-only check is done for every handler by
``endpoint()``), so a request outside it is a 403 before the store is touched.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from . import run_store, scopes, serializers, store
from .engine import engine
from .http import Handler, read_body
from .ids import new_id
from .streaming import RunEventStream, SSEResponse


def _assistant(request: HttpRequest, assistant_id: str) -> None:
    scopes.check_assistant(scopes.of_request(request), assistant_id)


def _thread(request: HttpRequest, thread_id: str, *, write: bool = False, publishing: bool = False) -> None:
    scopes.check_thread(scopes.of_request(request), thread_id, write=write, publishing=publishing)


def _in_thread(operation: Callable[..., dict], *, write: bool = False, schema: str | None = None) -> Handler:
    """The handler of a thread or of an object in one: the key must reach the thread (to change it, for
    ``write``), then the store's ``operation`` is given the URL's ids, and the body read against ``schema``."""

    def handler(request: HttpRequest, thread_id: str, **ids: str) -> dict:
        _thread(request, thread_id, write=write)
        if schema is None:
            return operation(thread_id, **ids)
        return operation(thread_id, **ids, body=read_body(request, schema))

    return handler


def _knowledge(request: HttpRequest, body: dict) -> dict:
    """Files and vector stores belong to no assistant (``scopes.check_unassigned``): a key limited to some
    assistants may not name them either, in ``tool_resources.file_search`` or in messages' ``attachments`` (a
    run's search would read them). Returns the body."""
    thread = body.get("thread") or {}
    resources = [body.get("tool_resources"), thread.get("tool_resources")]
    messages = [body, *(body.get("messages") or []), *(body.get("additional_messages") or []),
                *(thread.get("messages") or [])]
    if any(isinstance(r, dict) and r.get("file_search") is not None for r in resources) or any(
            isinstance(m, dict) and m.get("attachments") for m in messages):
        scopes.check_unassigned(scopes.of_request(request), "files and vector stores")
    return body


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
    body = _knowledge(request, read_body(request, "ModifyAssistantRequest"))
    scopes.check_assistant_change(scopes.of_request(request), assistant_id, body)
    return store.modify_assistant(assistant_id, body)


def delete_assistant(request: HttpRequest, assistant_id: str) -> dict:
    _assistant(request, assistant_id)
    return store.delete_assistant(assistant_id)


# Threads


def create_thread(request: HttpRequest) -> dict:
    body = _knowledge(request, read_body(request, "CreateThreadRequest"))
    scopes.check_new_thread(scopes.of_request(request), body.get("metadata"))
    return store.create_thread(body)


def retrieve_thread(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return serializers.thread(store.get_thread(thread_id))


def modify_thread(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id, write=True)
    body = _knowledge(request, read_body(request, "ModifyThreadRequest"))
    if "metadata" in body:
        scopes.check_new_thread(scopes.of_request(request), body["metadata"])
    return store.modify_thread(thread_id, body)


delete_thread = _in_thread(store.delete_thread, write=True)


# Messages


def list_messages(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return store.list_messages(thread_id, request.GET)


def create_message(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id, write=True, publishing=True)
    return store.create_message(thread_id, _knowledge(request, read_body(request, "CreateMessageRequest")))


retrieve_message = _in_thread(store.retrieve_message)
modify_message = _in_thread(store.modify_message, write=True, schema="ModifyMessageRequest")
delete_message = _in_thread(store.delete_message, write=True)


# Runs


def _stream(run_id: str, start: Callable[[], list[tuple[str, dict]]]) -> SSEResponse:
    """The run's event stream: subscribed to before ``start`` (which creates the run or queues it again, and
    returns the events the stream begins with), so that no event the engine emits can be missed."""
    events = engine.subscribe(run_id)
    try:
        prelude = start()
    except BaseException:
        engine.unsubscribe(run_id, events)
        raise
    return SSEResponse(RunEventStream(run_id, events, prelude))


def _start_run(body: dict, create: Callable[[str], tuple[dict, ...]]) -> dict | SSEResponse:
    """Create a run (``create`` returns the new thread, if any, then the run); with ``stream: true`` answer with
    its event stream."""
    run_id = new_id("run")
    if not body.get("stream"):
        return create(run_id)[-1]

    def start() -> list[tuple[str, dict]]:
        created = create(run_id)
        prelude = [("thread.created", created[0])] if len(created) == 2 else []
        return [*prelude, ("thread.run.created", created[-1]), ("thread.run.queued", created[-1])]

    return _stream(run_id, start)


def list_runs(request: HttpRequest, thread_id: str) -> dict:
    _thread(request, thread_id)
    return run_store.list_runs(thread_id, request.GET)


def create_run(request: HttpRequest, thread_id: str) -> dict | SSEResponse:
    _thread(request, thread_id, write=True)
    run_store.check_include(request.GET)
    body = _knowledge(request, read_body(request, "CreateRunRequest"))
    _assistant(request, body["assistant_id"])
    body["include[]"] = request.GET.getlist("include[]")
    return _start_run(body, lambda run_id: (run_store.create_run(thread_id, run_id, body),))


def create_thread_and_run(request: HttpRequest) -> dict | SSEResponse:
    body = _knowledge(request, read_body(request, "CreateThreadAndRunRequest"))
    _assistant(request, body["assistant_id"])
    scopes.check_new_thread(scopes.of_request(request), (body.get("thread") or {}).get("metadata"))
    return _start_run(body, lambda run_id: run_store.create_thread_and_run(run_id, body))


retrieve_run = _in_thread(run_store.retrieve_run)
modify_run = _in_thread(run_store.modify_run, write=True, schema="ModifyRunRequest")
cancel_run = _in_thread(run_store.cancel_run, write=True)


def submit_tool_outputs(request: HttpRequest, thread_id: str, run_id: str) -> dict | SSEResponse:
    """Continue a run in ``requires_action``; with ``stream: true`` answer with the rest of its events."""
    _thread(request, thread_id, write=True)
    body = read_body(request, "SubmitToolOutputsRunRequest")
    if not body.get("stream"):
        return run_store.submit_tool_outputs(thread_id, run_id, body)[0]
    return _stream(run_id, lambda: run_store.submit_tool_outputs(thread_id, run_id, body)[1])


# Run steps


def list_run_steps(request: HttpRequest, thread_id: str, run_id: str) -> dict:
    _thread(request, thread_id)
    run_store.check_include(request.GET)
    return run_store.list_steps(thread_id, run_id, request.GET)


def retrieve_run_step(request: HttpRequest, thread_id: str, run_id: str, step_id: str) -> dict:
    _thread(request, thread_id)
    run_store.check_include(request.GET)
    return run_store.get_step(thread_id, run_id, step_id, bool(request.GET.getlist("include[]")))
