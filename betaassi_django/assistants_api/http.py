"""The request/response plumbing shared by every /v1 view.

``endpoint()`` turns per-method handlers into one async Django view that
authenticates, parses and validates the body, and answers every failure with
an OpenAI-shaped error: client input never produces a 500.

Handlers are plain functions (their work is database work): the async view
runs authentication and the handler in one ``sync_to_async`` hop, and the sync
in-process transport calls the same ``handle`` directly, with no event loop.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from betaassi_django import conf

from . import scopes
from .errors import ApiError, invalid, server_error
from .kept_connections import close_thread_connections
from .limits import MAX_DEPTH, too_deep
from .models import ApiKey, hash_key
from .serializers import Encoded
from .validation import validate_body

logger = logging.getLogger("betaassi_django.api")

IN_PROCESS_SCOPE_KEY = "betaassi.in_process"
Handler = Callable[..., dict | Encoded | HttpResponseBase]


def is_in_process(request: HttpRequest) -> bool:
    """True for calls from the app's own in-process transport (never set over HTTP)."""
    scope = getattr(request, "scope", None)
    return bool(scope and scope.get(IN_PROCESS_SCOPE_KEY))


def _check_key(raw_key: str) -> ApiKey | None:
    key = ApiKey.objects.filter(hashed_key=hash_key(raw_key), revoked__isnull=True).first()
    if key is None:
        return None
    stamp = timezone.now()
    if key.last_used is None or (stamp - key.last_used).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used=stamp)
    return key


def json_response(data: dict | Encoded, status: int = 200) -> HttpResponse:
    """Compact JSON, as the API's bodies are plain JSON values (no Django encoder needed); ``Encoded`` is sent as
    it is."""
    body = data if isinstance(data, Encoded) else json.dumps(data, separators=(",", ":"))
    return HttpResponse(body, status=status, content_type="application/json")


def authenticate(request: HttpRequest) -> None:
    """Check the key and set the request's scope (``scopes.of_request``); the in-process client is full access."""
    if is_in_process(request):
        setattr(request, scopes.REQUEST_ATTR, scopes.FULL)
        return
    header = request.headers.get("Authorization", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with "
            "`python manage.py create_api_key NAME`.",
        )
    key = _check_key(raw_key.strip())
    if key is None:
        shown = raw_key.strip()
        shown = f"{shown[:8]}***{shown[-4:]}" if len(shown) > 12 else "***"
        raise ApiError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
    setattr(request, scopes.REQUEST_ATTR, scopes.of_key(key))


def read_body(request: HttpRequest, schema_name: str) -> dict:
    """The JSON body, validated against the named request schema (its nesting checked before it is parsed)."""
    limit = conf.get().api_max_body_bytes
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    try:
        raw = request.body if declared <= limit else None
    except RequestDataTooBig:
        raw = None
    if raw is None or len(raw) > limit:
        raise invalid(
            f"The request body is larger than the {limit} bytes this server accepts.", code="request_too_large"
        )
    if not raw.strip():
        body = {}
    elif too_deep(raw):
        raise invalid(
            f"The request body is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects are "
            "accepted.",
            code="nesting_too_deep",
        )
    else:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
            ) from None
    return validate_body(schema_name, body)


def check_query(request: HttpRequest) -> None:
    """Parse the query string now, so that too many parameters is a 400 and not an error in a handler."""
    try:
        request.GET  # noqa: B018 (parsed lazily, on first access)
    except TooManyFieldsSent:
        raise invalid(
            f"The query string has more than the {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters this server "
            "accepts.",
            code="too_many_parameters",
        ) from None


#: Threads that serve the API's reads on SQLite (WAL lets readers run beside the one writer).
SQLITE_READERS = 4


@functools.cache
def sqlite_executor(method: str = "POST") -> ThreadPoolExecutor | None:
    """On SQLite, the threads (so the connections) for the API's database work in this process.

    SQLite has a single writer. Under ASGI every request would otherwise run in
    a thread of its own with a connection of its own, and concurrent requests
    would queue on the file lock through SQLite's sleeping busy handler, slowly
    and unfairly, until some timed out ("database is locked"). Writes (POST,
    DELETE) take turns on one thread instead; reads (GET) run on a few threads
    of their own, so they never wait behind the writes. Other databases keep
    Django's per-request threads.
    """
    if connection.vendor != "sqlite":
        return None
    if method == "GET":
        return ThreadPoolExecutor(max_workers=SQLITE_READERS, thread_name_prefix="betaassi-api-sqlite-read")
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="betaassi-api-sqlite")


def close_sqlite_executor_connections() -> None:
    """Close the connections the SQLite threads hold (before a test database is dropped)."""
    for method, workers in (("GET", SQLITE_READERS), ("POST", 1)):
        executor = sqlite_executor(method)
        if executor is None:
            return
        close_thread_connections(executor, workers)


def endpoint(**handlers: Handler):
    """One view for a URL: ``endpoint(GET=list_x, POST=create_x)``."""
    allowed = ", ".join(sorted(handlers))

    def handle(request: HttpRequest, **kwargs) -> HttpResponseBase:
        try:
            authenticate(request)
            check_query(request)
            handler = handlers.get(request.method or "")
            if handler is None:
                raise ApiError(405, f"Method {request.method} is not allowed on {request.path}; use {allowed}.")
            if handler is not _unknown:
                scopes.check_method(scopes.of_request(request), request.method)
            result = handler(request, **kwargs)
        except ApiError as error:
            return error.response()
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, request.path)
            return server_error().response()
        return result if isinstance(result, HttpResponseBase) else json_response(result)

    def handle_and_release(request: HttpRequest, **kwargs) -> HttpResponseBase:
        # A streamed run outlives the handler's database work: give the connection back (to the pool) now,
        # not when the stream ends, or concurrent streams would hold every connection there is.
        try:
            return handle(request, **kwargs)
        finally:
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()

    @csrf_exempt
    async def view(request: HttpRequest, **kwargs) -> HttpResponseBase:
        try:
            executor = sqlite_executor("GET" if request.method == "GET" else "POST")
            if executor is not None:
                return await sync_to_async(handle, thread_sensitive=False, executor=executor)(request, **kwargs)
            # Not thread-sensitive: each call takes a thread of the loop's pool rather than queueing on the one
            # thread that every consumer in the process shares (the handler keeps nothing on its thread).
            return await sync_to_async(handle_and_release, thread_sensitive=False)(request, **kwargs)
        except Exception:
            # Outside the handler (a pool shut down, a connection that fails to close): still a 500 in
            # OpenAI's shape, never Django's HTML page.
            logger.exception("unhandled error around %s %s", request.method, request.path)
            return server_error().response()

    view.handle = handle
    return view


def _unknown(request: HttpRequest, **kwargs) -> dict:
    raise ApiError(404, f"Invalid URL ({request.method} {request.path}).")


unknown_path = endpoint(**{method: _unknown for method in ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD",
                                                           "OPTIONS")})
