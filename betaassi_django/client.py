"""The one factory for openai clients, for whichever backend is configured.

- ``embedded`` (default): the app's own Assistants API, reached in-process.
- ``remote``: any Assistants-compatible host at ``OPENAI_BASE_URL``.

Everything in betaassi-django talks to its backend through these clients, so
the official SDK (its retries, streaming helpers and types) is the only client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import weakref
from collections.abc import Iterator

import httpx2
import openai
from asgiref.sync import sync_to_async
from django.core.signals import setting_changed

from betaassi_django import conf

#: The base URL of in-process clients; nothing listens there, no socket is opened.
EMBEDDED_BASE_URL = "http://embedded.betaassi.invalid/v1"
EMBEDDED_API_KEY = "in-process"

_sync_client: openai.OpenAI | None = None
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_overrides: list[tuple[openai.OpenAI | None, openai.AsyncOpenAI | None]] = []


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of this process's HTTP clients (httpx's default: certifi's CA bundle). Loading the
    bundle costs about 35 ms of CPU, which every new transport paid again; a client is made per event loop."""
    return httpx2.create_ssl_context()


def _connection(backend: str | None, asynchronous: bool, wrap_transport) -> dict:
    """base_url, api_key and http_client for the backend, shared by both client kinds."""
    settings = conf.get()
    if (backend or settings.backend) == "embedded":
        from betaassi_django.assistants_api.transport import AsyncInProcessTransport, InProcessTransport

        transport = AsyncInProcessTransport() if asynchronous else InProcessTransport()
        base_url, api_key = EMBEDDED_BASE_URL, EMBEDDED_API_KEY
    else:
        transport = (httpx2.AsyncHTTPTransport if asynchronous else httpx2.HTTPTransport)(verify=tls_context())
        base_url, api_key = settings.openai_base_url, settings.openai_api_key
    if wrap_transport is not None:
        transport = wrap_transport(transport)
    http_client = (openai.DefaultAsyncHttpxClient if asynchronous else openai.DefaultHttpxClient)(transport=transport)
    return {"base_url": base_url or None, "api_key": api_key or None, "http_client": http_client}


def build_client(*, backend: str | None = None, wrap_transport=None, **options) -> openai.OpenAI:
    """A new sync client; ``options`` go to ``openai.OpenAI`` (e.g. ``max_retries``, ``base_url``).

    ``wrap_transport`` receives the httpx2 transport (in-process or HTTP) and
    returns the one to use, e.g. to record or count requests.
    """
    return openai.OpenAI(**{**_connection(backend, False, wrap_transport), **options})


def build_async_client(*, backend: str | None = None, wrap_transport=None, **options) -> openai.AsyncOpenAI:
    """A new async client; ``options`` go to ``openai.AsyncOpenAI``."""
    return openai.AsyncOpenAI(**{**_connection(backend, True, wrap_transport), **options})


def get_client() -> openai.OpenAI:
    """The shared sync client for the configured backend."""
    global _sync_client
    if _overrides and _overrides[-1][0] is not None:
        return _overrides[-1][0]
    if _sync_client is None:
        _sync_client = build_client()
    return _sync_client


def get_async_client() -> openai.AsyncOpenAI:
    """The shared async client of the running event loop (connection pools are per loop)."""
    if _overrides and _overrides[-1][1] is not None:
        return _overrides[-1][1]
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = build_async_client()
    return client


@contextlib.contextmanager
def use_clients(sync: openai.OpenAI | None = None, async_: openai.AsyncOpenAI | None = None) -> Iterator[None]:
    """Make ``get_client()`` / ``get_async_client()`` return these clients for a while.

    For tests and tools that need a client with their own transport, hooks or
    retries (for example one that counts the requests it sends).
    """
    _overrides.append((sync, async_))
    try:
        yield
    finally:
        _overrides.pop()


def in_process(api: openai.OpenAI | openai.AsyncOpenAI) -> bool:
    """Whether ``api`` reaches the embedded API in this process (its transport, under any wrappers that keep
    theirs as ``inner`` like ``testing.RecordingTransport``, is an in-process one)."""
    from betaassi_django.assistants_api.transport import AsyncInProcessTransport, InProcessTransport

    transport = getattr(api._client, "_transport", None)  # the SDK's httpx client; its transport is private
    while transport is not None and not isinstance(transport, (InProcessTransport, AsyncInProcessTransport)):
        transport = getattr(transport, "inner", None)
    return transport is not None


def run_events():
    """``with run_events() as events:`` around an in-process call that creates or continues a run: ``events``
    then receives that run's ``(event, data)`` pairs straight from the run engine (``None`` ends a stream), as
    the API would stream them, without encoding them as server-sent events for the SDK to parse again. Give
    the queue back with ``stop_run_events(events)``."""
    from betaassi_django.assistants_api.run_events import listening

    return listening()


def calls_store_directly(api: openai.OpenAI | openai.AsyncOpenAI) -> bool:
    """Whether code of this process may call the embedded API's store as the view would (``create_run_here``,
    the publish queue's registry and events) rather than send ``api`` a request: ``api`` reaches the embedded
    API in this process through a bare in-process transport (a wrapped or subclassed one, recording or counting
    requests, gets its requests). The in-process transport is trusted as such (no API key), so nothing is
    skipped but the request's building, routing, encoding and parsing."""
    from betaassi_django.assistants_api.transport import AsyncInProcessTransport, InProcessTransport

    return type(getattr(api._client, "_transport", None)) in (InProcessTransport, AsyncInProcessTransport)


def create_run_here(thread_id: str, params: dict) -> dict | None:
    """Create a run as ``POST /v1/threads/{thread_id}/runs`` with the body ``params`` would, in this thread: the
    same validation and store, without building, routing, encoding and parsing a request (about 6 ms of CPU a
    turn). The run as the API serialises it; None when the API would refuse it or fail (nothing is stored then):
    the caller sends the request, so the refusal is the SDK's own error, raised as ever."""
    from betaassi_django.assistants_api import run_store
    from betaassi_django.assistants_api.engine import engine
    from betaassi_django.assistants_api.ids import new_id
    from betaassi_django.assistants_api.validation import validate_body

    engine.start()  # as the in-process transport does: this process's runs keep their heartbeat
    try:
        body = validate_body("CreateRunRequest", json.loads(json.dumps(params)))  # the body as it would be sent
        return run_store.create_run(thread_id, new_id("run"), body)
    except Exception:  # an ApiError (a 400, a 404) or a failure (a 500): the request gives the SDK's exception
        return None


async def acreate_run_here(thread_id: str, params: dict, before=None) -> dict | None:
    """``create_run_here`` from async code, on the thread the API's view would use (SQLite's writer thread, or a
    thread of its own that then releases its connection, as the view does). ``before()``, when given, runs there
    first and what it raises propagates (a turn's quota check: one thread hop for both, not two)."""
    from betaassi_django.assistants_api.http import sqlite_executor

    executor = sqlite_executor("POST")
    if executor is not None:
        return await sync_to_async(_create_after, thread_sensitive=False, executor=executor)(thread_id, params, before)
    return await sync_to_async(_create_and_release, thread_sensitive=False)(thread_id, params, before)


def _create_after(thread_id: str, params: dict, before) -> dict | None:
    if before is not None:
        before()
    return create_run_here(thread_id, params)


def _create_and_release(thread_id: str, params: dict, before) -> dict | None:
    from django.db import connection

    try:
        return _create_after(thread_id, params, before)
    finally:
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def stop_run_events(events) -> None:
    from betaassi_django.assistants_api.engine import engine

    if events.run_id is not None:
        engine.unsubscribe(events.run_id, events)


def reset() -> None:
    """Forget shared clients (after the configuration changed)."""
    global _sync_client
    _sync_client = None
    _async_clients.clear()


def _settings_changed(**kwargs) -> None:
    """The backend, its URL or its key may have changed: shared clients are built again on next use."""
    reset()


setting_changed.connect(_settings_changed)
