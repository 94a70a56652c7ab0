"""The Files API (``/v1/files``) through the openai SDK, in-process and over HTTP, every response validated.

Uploads are stored under the test run's MEDIA_ROOT (tests/settings.py), which the daphne servers share, so
both transports can check what storage holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import openai
import pytest
from django.conf import settings

from betaassi_django.assistants_api.models import File
from betaassi_django.assistants_api.transport import InProcessTransport
from betaassi_django.client import tls_context
from betaassi_django.testing import LiveServer, scratch_database_url
from tests.conftest import _database_url, _sdk_client
from tests.spec import ValidatingTransport
from tests.test_api_scopes import forbidden, key_client, refused

pytestmark = pytest.mark.django_db(transaction=True)

BINARY = bytes(range(256)) * 300 + b"\x00\xff\r\n"
SMALL_LIMIT = 1024


def stored(file_id: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "betaassi" / "files" / file_id


def stored_names() -> set[str]:
    folder = Path(settings.MEDIA_ROOT) / "betaassi" / "files"
    return set(os.listdir(folder)) if folder.exists() else set()


@pytest.fixture
def files(client) -> openai.OpenAI:
    """The SDK client, with no file left from an earlier test (the live server's database outlives tests)."""
    for file in client.files.list().data:
        client.files.delete(file.id)
    return client


def error_of(caught) -> dict:
    return caught.value.response.json()["error"]


def test_upload_retrieve_download_and_delete(files):
    before = stored_names()
    notes = files.files.create(file=("notes.md", b"# Notes\n\nHello.\n", "text/markdown"), purpose="assistants")
    assert notes.id.startswith("file-") and len(notes.id) == 29
    assert (notes.object, notes.bytes, notes.filename, notes.purpose, notes.status) == (
        "file", 16, "notes.md", "assistants", "processed")
    assert notes.expires_at is None
    assert files.files.retrieve(notes.id) == notes
    assert stored_names() - before == {notes.id}
    assert stored(notes.id).read_bytes() == b"# Notes\n\nHello.\n"

    download = files.files.with_raw_response.content(notes.id)
    assert download.http_response.content == b"# Notes\n\nHello.\n"
    assert download.headers["content-type"] == "text/markdown"
    assert download.headers["content-disposition"] == 'attachment; filename="notes.md"'
    assert download.headers["x-content-type-options"] == "nosniff"

    blob = files.files.create(file=("blob.bin", BINARY, "application/octet-stream"), purpose="user_data")
    assert (blob.bytes, blob.purpose) == (len(BINARY), "user_data")
    assert files.files.content(blob.id).content == BINARY

    deleted = files.files.delete(notes.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (notes.id, "file", True)
    assert not stored(notes.id).exists()
    for call in (files.files.retrieve, files.files.content, files.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(notes.id)
        assert error_of(caught)["message"] == f"No such File object: {notes.id}"
    assert [f.id for f in files.files.list().data] == [blob.id]


def test_a_file_larger_than_the_memory_threshold_goes_through_a_temporary_file(files):
    """Past FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) Django's parser writes the upload to a temporary file, which the
    storage then moves into place."""
    big = bytes(range(251)) * (3 * 1024 * 1024 // 251 + 1)
    file = files.files.create(file=("big.bin", big, "application/octet-stream"), purpose="assistants")
    assert file.bytes == len(big) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    assert stored(file.id).read_bytes() == big
    assert files.files.content(file.id).content == big


@pytest.mark.parametrize("name, declared, served", [
    ("data.json", "application/json", "application/json"),
    ("page.html", "text/html", "text/html"),  # served as an attachment, never sniffed: not rendered
    ("data.json", "not a type", "application/json"),  # a declared type that is no media type: from the name
    ("report.pdf", "", "application/pdf"),
    ("noext", "", "application/octet-stream"),
])
def test_the_download_content_type(files, name, declared, served):
    file = files.files.create(file=(name, b"{}", declared) if declared else (name, b"{}"), purpose="assistants")
    download = files.files.with_raw_response.content(file.id)
    assert download.headers["content-type"] == served
    assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert download.headers["x-content-type-options"] == "nosniff"


def test_list_filters_by_purpose_and_pages(files):
    made = [files.files.create(file=(f"doc{i}.txt", f"text {i}".encode(), "text/plain"), purpose="assistants").id
            for i in range(3)]
    other = files.files.create(file=("data.json", b"{}", "application/json"), purpose="user_data").id

    newest_first = files.files.list()
    assert [f.id for f in newest_first.data] == [other, *reversed(made)]
    assert (newest_first.first_id, newest_first.last_id, newest_first.has_more) == (other, made[0], False)
    assert [f.id for f in files.files.list(purpose="user_data").data] == [other]
    assert files.files.list(purpose="batch").data == []
    for odd in ("nonsense", "assistants\x00", "x" * 5000):  # no file has it; nothing reaches the database
        assert files.files.list(purpose=odd).data == []

    first = files.files.list(purpose="assistants", order="asc", limit=2)
    assert ([f.id for f in first.data], first.has_more) == (made[:2], True)
    rest = files.files.list(purpose="assistants", order="asc", limit=2, after=first.last_id)
    assert ([f.id for f in rest.data], rest.has_more) == (made[2:], False)
    assert [f.id for f in files.files.list(purpose="assistants", limit=1, after=made[2])] == made[1::-1]


@pytest.mark.parametrize("limit, message", [
    ("0", "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    ("10001", "Invalid 'limit': integer above maximum value. Expected a value <= 10000, but got 10001 instead."),
    ("1" * 40, "Invalid 'limit': integer above maximum value. Expected a value <= 10000, but got "
               f"{'1' * 40} instead."),
    ("ten", "Invalid type for 'limit': expected an integer, but got 'ten' instead."),
])
def test_bad_list_parameters_are_400(files, limit, message):
    with pytest.raises(openai.BadRequestError) as caught:
        files.files.list(extra_query={"limit": limit})
    assert (error_of(caught)["message"], error_of(caught)["param"]) == (message, "limit")


def test_a_cursor_of_another_kind_is_400(files):
    with pytest.raises(openai.BadRequestError) as caught:
        files.files.list(after="vs_abc")
    assert error_of(caught)["message"] == "Invalid 'after': no object with id 'vs_abc' is in this list."


@pytest.mark.parametrize("file_id", ["vs_abc", "msg_abc", "file-unknown", "1" * 40, "x" * 5000, "file-\u00e9"])
def test_ids_of_another_kind_or_no_id_are_404(files, file_id):
    files.files.create(file=("a.txt", b"a", "text/plain"), purpose="assistants")
    for call in (files.files.retrieve, files.files.content, files.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(file_id)
        assert error_of(caught)["message"].startswith("No such File object: ")
    assert len(files.files.list().data) == 1


def test_expiry_is_set_from_expires_after(files):
    file = files.files.create(file=("a.txt", b"a", "text/plain"), purpose="assistants",
                              expires_after={"anchor": "created_at", "seconds": 3600})
    assert file.expires_at == file.created_at + 3600
    assert files.files.retrieve(file.id).expires_at == file.expires_at


@pytest.mark.parametrize("client", ["in_process"], indirect=True)
def test_an_expired_file_is_gone_and_the_next_list_deletes_it(files):
    file = files.files.create(file=("a.txt", b"a", "text/plain"), purpose="assistants",
                              expires_after={"anchor": "created_at", "seconds": 3600})
    kept = files.files.create(file=("b.txt", b"b", "text/plain"), purpose="assistants")
    File.objects.filter(id=file.id).update(expires_at=file.created_at - 1)
    for call in (files.files.retrieve, files.files.content):
        with pytest.raises(openai.NotFoundError):
            call(file.id)
    assert stored(file.id).exists()  # hidden at once, deleted by the next create or list
    assert [f.id for f in files.files.list().data] == [kept.id]
    assert not stored(file.id).exists()
    assert not File.objects.filter(id=file.id).exists()


# -- what is refused -------------------------------------------------------------------------------------------


def raw_api(kind: str, server=None) -> httpx2.Client:
    """httpx2 on the API, bodies sent exactly as built, every response checked against the specification."""
    if kind == "http":
        transport, base_url, headers = httpx2.HTTPTransport(verify=tls_context()), server.base_url, {
            "Authorization": f"Bearer {server.api_key}"}
    else:
        transport, base_url, headers = InProcessTransport(), "http://embedded.betaassi.invalid/v1", {}
    return httpx2.Client(transport=ValidatingTransport(transport, kind), base_url=base_url, headers=headers,
                         timeout=60)


@pytest.fixture(params=["in_process", "http"])
def api(request, files) -> httpx2.Client:
    server = request.getfixturevalue("daphne_server") if request.param == "http" else None
    with raw_api(request.param, server) as client:
        yield client


def refusal(response: httpx2.Response) -> dict:
    assert response.status_code == 400, response.text
    return response.json()["error"]


@pytest.mark.parametrize("data, files_, param, message", [
    ({}, {"file": ("a.txt", b"a")}, "purpose", "Missing required parameter: 'purpose'."),
    ({"purpose": "assistants"}, {}, "file", "Missing required parameter: 'file'."),
    ({"purpose": "assistants", "file": "not a file"}, {}, "file",
     "'file' must be a file: a multipart part with a filename."),
    ({"purpose": "assistants"}, {"file": ("empty.txt", b"")}, "file",
     "The file is empty: upload a file of at least 1 byte."),
    ({"purpose": "batch"}, {"file": ("a.txt", b"a")}, "purpose",
     "Invalid value for 'purpose': 'batch' is not supported by this server, which serves the Assistants API. "
     "Supported values are: 'assistants', 'user_data'."),
    ({"purpose": "nonsense"}, {"file": ("a.txt", b"a")}, "purpose",
     "Invalid value for 'purpose': \"nonsense\". Supported values are: 'assistants', 'batch', 'fine-tune', "
     "'vision', 'user_data', 'evals'."),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "1" * 40},
     {"file": ("a.txt", b"a")}, "expires_after.seconds",
     f"Invalid 'expires_after.seconds': integer above maximum value. Expected a value <= 2592000, but got "
     f"{'1' * 40} instead."),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
     {"file": ("a.txt", b"a")}, "expires_after.seconds",
     "Invalid 'expires_after.seconds': integer below minimum value. Expected a value >= 3600, but got 60 instead."),
    ({"purpose": "assistants", "expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
     {"file": ("a.txt", b"a")}, "expires_after.anchor",
     "Invalid value for 'expires_after.anchor': \"last_active_at\". Supported values are: 'created_at'."),
    ({"purpose": "assistants", "extra": "1"}, {"file": ("a.txt", b"a")}, "extra",
     "Unrecognized request argument supplied: extra"),
])
def test_bad_uploads_are_400_naming_the_param_and_store_nothing(api, data, files_, param, message):
    before = stored_names()
    error = refusal(api.post("/files", data=data, files=files_ or None))
    assert (error["param"], error["message"]) == (param, message)
    assert stored_names() == before
    assert api.get("/files").json()["data"] == []


def test_a_body_that_is_not_a_form_is_400(api):
    error = refusal(api.post("/files", json={"purpose": "assistants", "file": "x"}))
    assert (error["param"], error["message"]) == (
        "file", "This endpoint takes a multipart/form-data body with the fields 'file' and 'purpose'.")
    assert refusal(api.post("/files"))["param"] == "file"  # no body at all


def test_two_files_in_one_request_are_400(api):
    error = refusal(api.post("/files", data={"purpose": "assistants"},
                             files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))]))
    assert (error["param"], error["message"]) == ("file", "Exactly one file may be uploaded per request.")


def multipart(filename_header: bytes, content: bytes = b"hello") -> tuple[bytes, str]:
    """A form with ``purpose`` and one file part whose Content-Disposition filename parameter is given raw."""
    boundary = "b0undary"
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; " + filename_header + b"\r\n"
            b"Content-Type: text/plain\r\n\r\n" + content + b"\r\n--b0undary--\r\n")
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("header, filename", [
    (b'filename="../../etc/passwd"', "passwd"),
    (b'filename="..\\\\secret.txt"', "secret.txt"),
    (b"filename*=UTF-8''a%ED%A0%80b.txt", "a\ufffd\ufffd\ufffdb.txt"),
    (b"filename*=UTF-8''caf%C3%A9%20%F0%9F%93%84.md", "caf\u00e9 \U0001f4c4.md"),
    (b'filename="' + b"n" * 400 + b'.pdf"', "n" * 251 + ".pdf"),
])
def test_the_clients_filename_is_kept_safely_and_never_used_as_the_path(api, header, filename):
    body, content_type = multipart(header)
    response = api.post("/files", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["filename"] == filename
    assert stored(file["id"]).read_bytes() == b"hello"
    download = api.get(f"/files/{file['id']}/content")
    assert download.content == b"hello"
    assert download.headers["content-disposition"].startswith("attachment; filename")


@pytest.mark.parametrize("header", [b'filename="../"', b'filename=".."', b'filename="a\xed\xa0\x80b.txt"'])
def test_a_file_part_without_a_usable_name_is_a_missing_file(api, header):
    """A name that is only a path, or a header that is not UTF-8 (a lone surrogate as raw bytes): Django's parser
    skips the part, so the file is missing."""
    body, content_type = multipart(header)
    error = refusal(api.post("/files", content=body, headers={"Content-Type": content_type}))
    assert (error["param"], error["message"]) == ("file", "Missing required parameter: 'file'.")


@pytest.fixture(scope="module")
def small_server():
    """A live server whose BETAASSI_FILE_MAX_BYTES is small, to refuse an oversized upload over real HTTP."""
    with (
        scratch_database_url(_database_url()) as url,
        LiveServer(url, env={"BETAASSI_FILE_MAX_BYTES": str(SMALL_LIMIT)}, cwd=settings.BASE_DIR) as server,
    ):
        yield server


@pytest.fixture(params=["in_process", "http"])
def small(request, settings) -> openai.OpenAI:
    """The SDK on an API that takes files of at most SMALL_LIMIT bytes."""
    settings.BETAASSI_FILE_MAX_BYTES = SMALL_LIMIT
    if request.param == "in_process":
        return _sdk_client("in_process")
    return _sdk_client("http", request.getfixturevalue("small_server"))


@pytest.mark.parametrize("size", [SMALL_LIMIT + 1, SMALL_LIMIT + 200_000])
def test_a_file_over_the_limit_is_400_and_nothing_is_stored(small, size):
    before = stored_names()
    with pytest.raises(openai.BadRequestError) as caught:
        small.files.create(file=("big.bin", b"x" * size, "application/octet-stream"), purpose="assistants")
    assert error_of(caught) == {"message": f"The file is larger than the {SMALL_LIMIT} bytes this server accepts.",
                                "type": "invalid_request_error", "param": "file", "code": "file_too_large"}
    assert stored_names() == before
    assert "big.bin" not in [f.filename for f in small.files.list().data]
    exact = small.files.create(file=("fits.bin", b"y" * SMALL_LIMIT, "application/octet-stream"),
                               purpose="assistants")
    assert exact.bytes == SMALL_LIMIT
    assert small.files.content(exact.id).content == b"y" * SMALL_LIMIT
    small.files.delete(exact.id)


# -- API keys --------------------------------------------------------------------------------------------------


def test_a_read_only_key_reads_files_and_may_not_upload_or_delete(daphne_server):
    full = _sdk_client("http", daphne_server)
    file = full.files.create(file=("kept.txt", b"kept", "text/plain"), purpose="assistants")
    ro = key_client(daphne_server, "--read-only")
    assert ro.files.retrieve(file.id) == file
    assert ro.files.content(file.id).content == b"kept"
    assert file.id in [f.id for f in ro.files.list().data]
    message = "You have insufficient permissions for this operation: this API key is read-only (GET requests only)."
    refused(lambda: ro.files.create(file=("x.txt", b"x", "text/plain"), purpose="assistants"), message)
    refused(lambda: ro.files.delete(file.id), message)
    assert full.files.content(file.id).content == b"kept"
    full.files.delete(file.id)


def test_a_key_limited_to_assistants_reaches_no_file(daphne_server):
    full = _sdk_client("http", daphne_server)
    assistant = full.beta.assistants.create(model="echo", name="limited")
    file = full.files.create(file=("secret.txt", b"secret", "text/plain"), purpose="assistants")
    limited = key_client(daphne_server, "--assistant", assistant.id)
    message = ("You have insufficient permissions for this operation: this API key is limited to some assistants "
               "and their threads, and files belong to no assistant: use a key without that limit.")
    for call in (lambda: limited.files.list(), lambda: limited.files.retrieve(file.id),
                 lambda: limited.files.content(file.id), lambda: limited.files.delete(file.id),
                 lambda: limited.files.create(file=("x.txt", b"x", "text/plain"), purpose="assistants"),
                 lambda: limited.files.retrieve("file-unknown")):
        refused(call, message)
    assert full.files.content(file.id).content == b"secret"
    assert forbidden(message)["error"]["code"] == "insufficient_permissions"
    full.files.delete(file.id)
    full.beta.assistants.delete(assistant.id)
