"""What only HTTP has: API keys, raw bodies, unknown paths, body limits."""

from __future__ import annotations

import hashlib
import io
import json

import httpx2
import openai
import pytest
from django.core.management import call_command

from betaassi_django.assistants_api.models import ApiKey
from tests.conftest import in_process_client
from tests.spec import validate_json


def _post(server, path: str, content: bytes, key: str | None = None, **headers) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {key or server.api_key}", "Content-Type": "application/json", **headers}
    response = httpx2.post(server.base_url + path, content=content, headers=headers, timeout=30)
    validate_json("POST", "/v1" + path, response.status_code, response.content, "http-raw")
    return response


def _error(response: httpx2.Response) -> dict:
    return response.json()["error"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-key", "Basic abc", f"Bearer {'x' * 64}"])
def test_missing_or_wrong_key_is_401(daphne_server, header):
    headers = {"Authorization": header} if header else {}
    for path in ("/assistants", "/threads/thread_x/messages", "/no/such/path"):
        response = httpx2.get(daphne_server.base_url + path, headers=headers, timeout=30)
        assert response.status_code == 401
        error = _error(response)
        assert error["type"] == "invalid_request_error" and error["param"] is None
        assert error["code"] == (
            "invalid_api_key" if header and header.startswith("Bearer ") and len(header) > 7 else None
        )


def test_revoked_key_is_401(daphne_server):
    raw = daphne_server.manage("create_api_key", "to-revoke").strip().splitlines()[-1]
    assert _post(daphne_server, "/threads", b"{}", key=raw).status_code == 200
    daphne_server.manage(
        "shell",
        "-c",
        "from betaassi_django.assistants_api.models import ApiKey; "
        "from django.utils import timezone; "
        "ApiKey.objects.filter(name='to-revoke').update(revoked=timezone.now())",
    )
    response = _post(daphne_server, "/threads", b"{}", key=raw)
    assert response.status_code == 401 and _error(response)["code"] == "invalid_api_key"


@pytest.mark.django_db
def test_create_api_key_prints_the_key_last_and_stores_only_its_hash():
    out = io.StringIO()
    call_command("create_api_key", "laptop", stdout=out, stderr=io.StringIO())
    raw = out.getvalue().strip().splitlines()[-1]
    assert raw.startswith("sk-betaassi-") and len(raw) > 40
    key = ApiKey.objects.get(name="laptop")
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert key.prefix == raw[: len(key.prefix)] and len(key.prefix) < 20
    stored = json.dumps(list(ApiKey.objects.values()), default=str)
    assert raw not in stored


@pytest.mark.parametrize(
    ("body", "message_start"),
    [
        (b"{not json", "We could not parse the JSON body"),
        (b"\xff\xfe\x00", "We could not parse the JSON body"),
        (b"[1, 2]", "Invalid type for the request body: expected an object, but got an array"),
        (b'"text"', "Invalid type for the request body: expected an object, but got a string"),
        (b"null", "Invalid type for the request body: expected an object, but got null"),
    ],
)
def test_malformed_bodies_are_400(daphne_server, body, message_start):
    for path in ("/assistants", "/threads", "/threads/runs"):
        response = _post(daphne_server, path, body)
        assert response.status_code == 400, path
        assert _error(response)["message"].startswith(message_start), path
        assert _error(response)["type"] == "invalid_request_error"


def test_wrong_types_name_the_param(daphne_server):
    cases = {
        "/assistants": ({"model": 42}, "model"),
        "/threads": ({"messages": "hello"}, "messages"),
        "/threads/runs": ({"assistant_id": "asst_x", "stream": "yes"}, "stream"),
    }
    for path, (body, param) in cases.items():
        response = _post(daphne_server, path, json.dumps(body).encode())
        assert response.status_code == 400 and _error(response)["param"] == param, path


def test_body_over_the_limit_is_400(daphne_server):
    huge = json.dumps({"model": "m", "instructions": "x" * (4 * 1024 * 1024)}).encode()
    response = _post(daphne_server, "/assistants", huge)
    assert response.status_code == 400
    assert _error(response)["code"] == "request_too_large"
    assert "4194304 bytes" in _error(response)["message"]


def test_unknown_path_and_method(daphne_server):
    headers = {"Authorization": f"Bearer {daphne_server.api_key}"}
    response = httpx2.get(daphne_server.base_url + "/fine_tuning/jobs", headers=headers, timeout=30)
    assert response.status_code == 404 and _error(response)["message"] == "Invalid URL (GET /v1/fine_tuning/jobs)."
    response = httpx2.delete(daphne_server.base_url + "/threads", headers=headers, timeout=30)
    assert response.status_code == 405 and _error(response)["type"] == "invalid_request_error"


@pytest.mark.django_db(transaction=True)
def test_in_process_body_limit(settings):
    settings.BETAASSI_API_MAX_BODY_BYTES = 1000
    client = in_process_client()
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="m", instructions="x" * 2000)
    assert info.value.code == "request_too_large"
    assert client.beta.assistants.create(model="m", instructions="x" * 500).instructions == "x" * 500
