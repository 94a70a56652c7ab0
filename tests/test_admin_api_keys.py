"""API keys in the admin: the key is shown once, only its hash is stored; last used; revoke."""

from __future__ import annotations

import pytest
from django.test import Client

from betaassi_django.assistants_api.models import ApiKey, hash_key
from tests.admin_paths import admin_path
from tests.test_admin import shown

pytestmark = pytest.mark.django_db(transaction=True)


def issue(web) -> tuple[ApiKey, str]:
    response = web.post("/admin/assistants_api/apikey/add/", {"name": "laptop"})
    assert response.status_code == 200
    raw = response.context["raw_key"]
    assert f'<code id="raw-key">{raw}</code>' in response.text
    assert "no-store" in response["Cache-Control"]
    assert raw not in "".join(response.cookies[name].value for name in response.cookies)  # not in a messages cookie
    return ApiKey.objects.get(), raw


def test_creating_a_key_shows_it_once_and_stores_its_hash(web):
    key, raw = issue(web)
    assert raw.startswith("sk-betaassi-") and len(raw) > 40
    assert (key.name, key.hashed_key, key.prefix) == ("laptop", hash_key(raw), raw[:18])
    for page in (web.get("/admin/assistants_api/apikey/"), web.get(admin_path(ApiKey, "change", key.pk))):
        assert page.status_code == 200
        assert raw not in page.text and key.hashed_key not in page.text
        assert key.prefix in page.text


def test_last_used_is_set_by_the_http_api(web):
    key, raw = issue(web)
    assert key.last_used is None
    api = Client()
    assert api.get("/v1/assistants", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    key.refresh_from_db()
    assert key.last_used is not None
    listing = web.get("/admin/assistants_api/apikey/")
    assert [(k.name, k.last_used) for k in listing.context["cl"].result_list] == [("laptop", key.last_used)]


def test_revoking_refuses_the_key(web):
    key, raw = issue(web)
    other, _ = ApiKey.issue("other")
    response = web.post("/admin/assistants_api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302
    assert shown(response) == ["Revoked 1 key(s): laptop. Requests with them now get 401."]
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked is not None and other.revoked is None
    refused = Client().get("/v1/assistants", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    again = web.post("/admin/assistants_api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert shown(again) == ["The selected keys were already revoked."]
    revoked = web.get("/admin/assistants_api/apikey/", {"revoked__isempty": "0"})
    assert [k.name for k in revoked.context["cl"].result_list] == ["laptop"]


def test_renaming_a_key_keeps_its_hash(web):
    key, raw = issue(web)
    response = web.post(admin_path(ApiKey, "change", key.pk), {"name": "desktop"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.hashed_key) == ("desktop", hash_key(raw))
