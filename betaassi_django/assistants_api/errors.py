"""OpenAI-shaped API errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json

from django.http import HttpResponse

#: Errors echo client input (ids, keys, values): they are cut to these lengths.
MAX_MESSAGE_CHARS = 2000
MAX_PARAM_CHARS = 300


def _printable(text: str, limit: int) -> str:
    """``text`` as valid Unicode (a lone surrogate becomes ``\\ud800``), cut to ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ApiError(Exception):
    """An error answered to the client as OpenAI answers it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def as_dict(self) -> dict:
        param = None if self.param is None else _printable(self.param, MAX_PARAM_CHARS)
        return {"error": {"message": _printable(self.message, MAX_MESSAGE_CHARS), "type": self.type, "param": param,
                          "code": self.code}}

    def response(self) -> HttpResponse:
        return HttpResponse(json.dumps(self.as_dict()), status=self.status, content_type="application/json")


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{object_id}'.")


def server_error() -> ApiError:
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )
