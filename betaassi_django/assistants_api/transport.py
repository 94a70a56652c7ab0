"""In-process transports: the app's own openai clients reach the /v1 views without sockets.

``InProcessTransport`` (sync) and ``AsyncInProcessTransport`` build the same
Django ``ASGIRequest`` daphne would and resolve it against the API's URLconf.
The async transport awaits the very view daphne calls; the sync one calls that
view's ``handle`` (the code the view runs in its one thread hop) directly on
the caller's thread, with no event loop, so a call made inside the caller's
database transaction stays inside it. No middleware runs and no request
signals are sent. A streamed response (a run's events, a file's bytes) is passed
on chunk by chunk, never joined in memory.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import httpx2
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBase, StreamingHttpResponse
from django.urls import resolve

from .engine import engine
from .http import IN_PROCESS_SCOPE_KEY
from .streaming import RunEventStream, SSEResponse

URLCONF = "betaassi_django.assistants_api.urls"
API_PREFIX = "/v1"


def _resolve(request: httpx2.Request, body: bytes):
    """The Django request daphne would build, and the /v1 view it reaches."""
    engine.start()  # a process using the API in-process keeps its runs' heartbeat and sweeps (recovery)
    path = request.url.path
    api_path = path[len(API_PREFIX):] if path.startswith(API_PREFIX + "/") else path
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": request.url.raw_path,
        "root_path": "",
        "query_string": request.url.query,
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "server": (request.url.host, request.url.port or 80),
        "client": ("127.0.0.1", 0),
        IN_PROCESS_SCOPE_KEY: True,
    }
    django_request = ASGIRequest(scope, io.BytesIO(body))
    match = resolve(api_path, urlconf=URLCONF)
    django_request.resolver_match = match
    return django_request, match


def _headers(response: HttpResponseBase) -> list[tuple[str, str]]:
    return list(response.items())


class _SyncFrames(httpx2.SyncByteStream):
    """Pulls SSE frames one at a time, each in its own short event loop."""

    def __init__(self, frames: RunEventStream) -> None:
        self._frames = frames

    def __iter__(self) -> Iterator[bytes]:
        pull = async_to_sync(self._next)
        while (frame := pull()) is not None:
            yield frame

    async def _next(self) -> bytes | None:
        try:
            return await self._frames.__anext__()
        except StopAsyncIteration:
            return None

    def close(self) -> None:
        self._frames.close()


class _AsyncFrames(httpx2.AsyncByteStream):
    def __init__(self, frames: RunEventStream) -> None:
        self._frames = frames

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for frame in self._frames:
            yield frame

    async def aclose(self) -> None:
        self._frames.close()


class _SyncChunks(httpx2.SyncByteStream):
    """A streamed Django response (a file's bytes: ``FileResponse``), chunk by chunk; closing it closes the file."""

    def __init__(self, response: StreamingHttpResponse) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.streaming_content

    def close(self) -> None:
        self._response.close()


class _AsyncChunks(httpx2.AsyncByteStream):
    def __init__(self, response: StreamingHttpResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._response.is_async:
            async for chunk in self._response.streaming_content:
                yield chunk
        else:
            for chunk in self._response.streaming_content:
                yield chunk

    async def aclose(self) -> None:
        self._response.close()


class InProcessTransport(httpx2.BaseTransport):
    """For ``openai.OpenAI``: call from sync code (not from inside an event loop)."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        django_request, match = _resolve(request, request.read())
        response = match.func.handle(django_request, *match.args, **match.kwargs)
        if isinstance(response, SSEResponse):
            stream = _SyncFrames(response.events)
            return httpx2.Response(response.status_code, headers=_headers(response), stream=stream, request=request)
        if isinstance(response, StreamingHttpResponse):
            return httpx2.Response(response.status_code, headers=_headers(response), stream=_SyncChunks(response),
                                   request=request)
        return httpx2.Response(
            response.status_code, headers=_headers(response), content=response.content, request=request
        )


class AsyncInProcessTransport(httpx2.AsyncBaseTransport):
    """For ``openai.AsyncOpenAI``: the view runs on the caller's event loop."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        django_request, match = _resolve(request, await request.aread())
        response = await match.func(django_request, *match.args, **match.kwargs)
        if isinstance(response, SSEResponse):
            stream = _AsyncFrames(response.events)
            return httpx2.Response(response.status_code, headers=_headers(response), stream=stream, request=request)
        if isinstance(response, StreamingHttpResponse):
            return httpx2.Response(response.status_code, headers=_headers(response), stream=_AsyncChunks(response),
                                   request=request)
        return httpx2.Response(
            response.status_code, headers=_headers(response), content=response.content, request=request
        )
