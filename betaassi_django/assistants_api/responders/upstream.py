"""What the two upstream responders share: the SDK client, tool conversion, error translation."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import weakref
from collections.abc import AsyncIterator

import openai
from django.core.signals import setting_changed

from betaassi_django import conf

from .interface import ResponderError

#: Event loop -> its client of the upstream endpoint (an httpx connection pool belongs to one loop).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = weakref.WeakKeyDictionary()


def get_upstream_client() -> openai.AsyncOpenAI:
    """The upstream model endpoint's client, shared per event loop.

    ``BETAASSI_UPSTREAM_BASE_URL`` / ``_API_KEY`` (falling back to ``OPENAI_BASE_URL`` /
    ``OPENAI_API_KEY``), with ``BETAASSI_UPSTREAM_TIMEOUT`` and the SDK's retries
    (``BETAASSI_UPSTREAM_MAX_RETRIES``). A local server such as Ollama needs no key, so an
    empty one is sent as a placeholder rather than refused.
    """
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        settings = conf.get()
        client = _clients[loop] = openai.AsyncOpenAI(
            base_url=settings.upstream_base_url, api_key=settings.upstream_api_key or "unset",
            timeout=settings.upstream_timeout, max_retries=settings.upstream_max_retries)
    return client


def _forget_clients(**kwargs) -> None:
    """A changed setting may be the endpoint, its key or its timeouts: the next call builds a new client."""
    _clients.clear()


setting_changed.connect(_forget_clients)


#: The request options the SDK's own ``create`` methods send (the key as a bearer token, nothing else).
_OPTIONS = {"security": {"bearer_auth": True}}


async def open_stream(path: str, body: dict) -> openai.AsyncStream:
    """POST ``body`` to the upstream's ``path`` and return its events as plain dicts, through the SDK client.

    Why not ``chat.completions.create`` / ``responses.create``: the body here is already in the wire format, and
    those methods first transform it against the SDK's TypedDicts (a walk of every message: most of a request's
    CPU once a thread has a few turns), then build an SDK model of every chunk, of which a run reads a few
    fields. The SDK still sends the request (its retries, timeouts, auth headers, status errors) and decodes the
    server-sent events (an ``error`` in the stream still raises ``openai.APIError``).
    """
    return await get_upstream_client().post(path, body=body, options=_OPTIONS, cast_to=object, stream=True,
                                            stream_cls=openai.AsyncStream[object])


def sampling(request) -> dict:
    """The run's temperature and top_p, for either API: only those the run sets."""
    return {name: value for name, value in (("temperature", request.temperature), ("top_p", request.top_p))
            if value is not None}


def new_call_id() -> str:
    """For an upstream that sends a function call without an id (some compatible servers do)."""
    return "call_" + secrets.token_hex(12)


def _message(exc: openai.APIError) -> str:
    """The upstream's own error message when its body has one (the SDK prefixes the status)."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def error_from(exc: openai.APIError) -> ResponderError:
    """An SDK error (after its retries) as the run's ``last_error``."""
    if isinstance(exc, openai.RateLimitError):
        return ResponderError("rate_limit_exceeded", f"The upstream model is rate limited: {_message(exc)}")
    if isinstance(exc, openai.APITimeoutError):
        return ResponderError("server_error", "The upstream model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return ResponderError("server_error", f"Could not reach the upstream model: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        return ResponderError("server_error", f"The upstream model answered {exc.status_code}: {_message(exc)}")
    return ResponderError("server_error", f"The upstream model failed: {exc.message}")


def refusal(text: str) -> ResponderError:
    return ResponderError("invalid_prompt", f"The model refused: {text}" if text else "The model refused.")


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except openai.APIError as exc:
        raise error_from(exc) from exc


def tool_choice(value, flat: bool):
    """The run's ``tool_choice`` for the upstream (Responses names a function flat, Chat nested)."""
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("function", {}).get("name")
        return {"type": "function", "name": name} if flat else {"type": "function", "function": {"name": name}}
    return value if value in ("auto", "none", "required") else "auto"


#: Model names of OpenAI's reasoning families (o1, o3, o4-mini, gpt-5...).
REASONING_MODELS = re.compile(r"^(o[1-9]|gpt-5)")


def wants_reasoning_items(request) -> bool:
    """Ask the Responses API for encrypted reasoning items (``store`` is false, so they are the only way a
    reasoning model keeps its reasoning across a run's tool rounds): when the run sets ``reasoning_effort``, or
    its model is of a reasoning family. Not for other models, which have none (and OpenAI refuses the include)."""
    return bool(request.reasoning_effort) or bool(REASONING_MODELS.match(request.model))


def text_format(response_format) -> dict | None:
    """The run's ``response_format`` as the Responses API's ``text.format`` (None for ``auto``): json_schema's
    fields flat. A json_schema without a schema (the Assistants API allows it) asks for any JSON object."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") != "json_schema":
        return {"type": response_format["type"]}
    schema = response_format.get("json_schema") or {}
    flat = {"type": "json_schema", "name": schema.get("name") or "response",
            "schema": schema["schema"] if isinstance(schema.get("schema"), dict) else {"type": "object"}}
    flat.update({k: schema[k] for k in ("description", "strict") if schema.get(k) is not None})
    return flat


def chat_response_format(response_format) -> dict | None:
    """The run's ``response_format`` for Chat Completions (the same shape; None for ``auto``)."""
    return response_format if isinstance(response_format, dict) else None
