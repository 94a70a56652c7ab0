"""Handlers of ``/v1/files`` (``http.endpoint`` makes them views); the store is ``files``.

``POST /files`` is the API's one multipart request. Its body is not read with ``http.read_body`` (JSON, at
most ``BETAASSI_API_MAX_BODY_BYTES``): Django's multipart parser streams the file part to a temporary file
(past ``FILE_UPLOAD_MAX_MEMORY_SIZE``), and ``_LimitedUpload``, the first upload handler, stops the parse as
soon as the file passes ``BETAASSI_FILE_MAX_BYTES``, so an oversized upload is refused with nothing stored
and never held in memory. The form fields are then validated against the specification's
``CreateFileRequest`` like any JSON body (``expires_after[anchor]`` / ``expires_after[seconds]``, as the SDKs
send them, become the ``expires_after`` object).

Scopes: files belong to no assistant, so a key limited to some assistants reaches none of them (403); a
read-only key may list, retrieve and download (``endpoint`` refuses its POST and DELETE).
"""

from __future__ import annotations

import re

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import FileResponse, HttpRequest
from django.http.multipartparser import MultiPartParserError

from betaassi_django import conf

from .. import scopes
from ..errors import invalid
from ..validation import validate_body
from . import files

#: Room for the multipart framing and the small fields around the file, in the declared Content-Length.
FORM_OVERHEAD = 64 * 1024
_NESTED = re.compile(r"([A-Za-z_]{1,64})\[([A-Za-z_]{1,64})\]")


class _LimitedUpload(FileUploadHandler):
    """Passes chunks on to the default handlers until the file passes ``limit`` bytes, then stops the parse (the
    partial temporary file is closed, so deleted)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def _too_large(limit: int):
    return invalid(f"The file is larger than the {limit} bytes this server accepts.", param="file",
                   code="file_too_large")


def _form(request: HttpRequest) -> tuple[dict, object | None]:
    """The form's fields as a ``CreateFileRequest`` body, and the uploaded file (None when there is none)."""
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        # Named ``file``: that is what such a body cannot carry.
        raise invalid("This endpoint takes a multipart/form-data body with the fields 'file' and 'purpose'.",
                      param="file", code="invalid_content_type")
    limit = conf.get().file_max_bytes
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit + FORM_OVERHEAD:
        raise _too_large(limit)
    guard = _LimitedUpload(request, limit)
    request.upload_handlers = [guard, *request.upload_handlers]
    try:
        fields, uploads = request.POST, request.FILES
    except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent):
        raise invalid("The form has more fields, or larger ones, than this server accepts.",
                      code="request_too_large") from None
    except MultiPartParserError:
        raise invalid("We could not parse the multipart/form-data body of your request.") from None
    if guard.too_large:
        raise _too_large(limit)
    body: dict = {}
    for name in fields:
        value = fields[name]
        nested = _NESTED.fullmatch(name)
        if nested:
            outer, inner = nested.groups()
            if not isinstance(body.get(outer, {}), dict):
                raise invalid(f"Invalid value for '{outer}': given both as a value and as an object.", param=outer)
            body.setdefault(outer, {})[inner] = int(value) if inner == "seconds" and value.isdigit() else value
        elif name == "file":
            raise invalid("'file' must be a file: a multipart part with a filename.", param="file",
                          code="invalid_type")
        else:
            body[name] = value
    for name in uploads:
        if name == "file" and len(uploads.getlist(name)) > 1:
            raise invalid("Exactly one file may be uploaded per request.", param="file")
        body[name] = ""
    return validate_body("CreateFileRequest", body), uploads.get("file")


def _uploads(request: HttpRequest) -> list:
    """The files Django's parser made of this request (none when it did not get that far)."""
    parsed = getattr(request, "_files", None)
    return [upload for _, group in parsed.lists() for upload in group] if parsed is not None else []


def _reach(request: HttpRequest) -> None:
    scopes.check_unassigned(scopes.of_request(request), "files")


def create_file(request: HttpRequest) -> dict:
    _reach(request)
    try:
        body, upload = _form(request)
        seconds = (body.get("expires_after") or {}).get("seconds")
        file = files.create_file(upload, body["purpose"], content_type=getattr(upload, "content_type", "") or "",
                                 expires_after_seconds=seconds)
    finally:
        # The in-process transport never finishes the request (Django closes its uploads then): close them here,
        # so a temporary file moved into storage is not unlinked again when it is collected.
        for parsed in _uploads(request):
            parsed.close()
    return files.serialize_file(file)


def list_files(request: HttpRequest) -> dict:
    _reach(request)
    return files.list_files(request.GET)


def retrieve_file(request: HttpRequest, file_id: str) -> dict:
    _reach(request)
    return files.serialize_file(files.get_file(file_id))


def delete_file(request: HttpRequest, file_id: str) -> dict:
    _reach(request)
    file = files.get_file(file_id)
    files.delete_file(file)
    return {"id": file.id, "object": "file", "deleted": True}


def download_file(request: HttpRequest, file_id: str) -> FileResponse:
    """The raw bytes, streamed from storage, as an attachment under the file's name (never rendered inline)."""
    _reach(request)
    file = files.get_file(file_id)
    response = FileResponse(files.open_bytes(file), as_attachment=True, filename=file.filename,
                            content_type=files.media_type(file))
    response["X-Content-Type-Options"] = "nosniff"
    return response
