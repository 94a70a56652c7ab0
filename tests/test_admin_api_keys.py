"""API keys in the admin: the key is shown once, only its hash is stored; last used; revoke."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from betaassi_django.assistants_api.models import ApiKey, Assistant, hash_key
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
    assert '<td class="field-used">never</td>' in web.get("/admin/assistants_api/apikey/").text
    api = Client()
    assert api.get("/v1/assistants", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    key.refresh_from_db()
    assert key.last_used is not None
    listing = web.get("/admin/assistants_api/apikey/")
    assert [(k.name, k.last_used) for k in listing.context["cl"].result_list] == [("laptop", key.last_used)]
    # Used a moment ago: "just now" (never "0 minutes ago"), the exact time on hover.
    assert f'<td class="field-used"><time datetime="{key.last_used.isoformat()}" title="' in listing.text
    assert '">just now</time></td>' in listing.text


def test_revoking_refuses_the_key(web):
    key, raw = issue(web)
    other, _ = ApiKey.issue("other")
    response = web.post("/admin/assistants_api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302
    assert shown(response) == ["Revoked 1 key(s): laptop. Requests with them now get 401."]
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked is not None and other.revoked is None
    from django.contrib.admin.models import CHANGE, LogEntry

    entries = LogEntry.objects.filter(object_id=str(key.pk), content_type__model="apikey", action_flag=CHANGE)
    assert [(e.user.username, e.action_flag, e.get_change_message()) for e in entries] == [("root", CHANGE, "Revoked.")]
    refused = Client().get("/v1/assistants", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    again = web.post("/admin/assistants_api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert shown(again) == ["The selected keys were already revoked."]
    revoked = web.get("/admin/assistants_api/apikey/", {"status": "revoked"})
    assert [k.name for k in revoked.context["cl"].result_list] == ["laptop"]


def test_the_status_filter_reads_active_and_revoked(web):
    ApiKey.issue("in use")
    old, _ = ApiKey.issue("old laptop")
    ApiKey.objects.filter(pk=old.pk).update(revoked=timezone.now())
    listing = web.get("/admin/assistants_api/apikey/")
    status = next(f for f in listing.context["cl"].filter_specs if f.title == "status")
    assert [c["display"] for c in status.choices(listing.context["cl"])] == ["All", "Active", "Revoked"]
    assert '<a href="?status=active">Active</a>' in listing.text
    assert '<a href="?status=revoked">Revoked</a>' in listing.text
    assert "Empty" not in listing.text
    for value, names in (("active", ["in use"]), ("revoked", ["old laptop"]), (None, ["in use", "old laptop"])):
        page = web.get("/admin/assistants_api/apikey/", {"status": value} if value else {})
        assert page.status_code == 200
        assert sorted(k.name for k in page.context["cl"].result_list) == names


def test_renaming_a_key_keeps_its_hash(web):
    key, raw = issue(web)
    response = web.post(admin_path(ApiKey, "change", key.pk), {"name": "desktop"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.hashed_key) == ("desktop", hash_key(raw))


def test_the_add_form_sets_the_scope_from_existing_assistants(web):
    mine = Assistant.objects.create(model="echo", name="mine")
    other = Assistant.objects.create(model="echo", name=None)
    form = web.get("/admin/assistants_api/apikey/add/").context["adminform"].form
    assert list(form.fields) == ["name", "read_only", "assistant_ids"]
    assert list(form.fields["assistant_ids"].choices) == [(mine.id, f"mine ({mine.id})"),
                                                          (other.id, f"(no name) ({other.id})")]
    response = web.post("/admin/assistants_api/apikey/add/", {"name": "reader", "read_only": "on",
                                                               "assistant_ids": [mine.id]})
    assert response.status_code == 200
    raw = response.context["raw_key"]
    assert f'<span id="key-scope">Read-only; assistants {mine.id}</span>' in response.text
    key = ApiKey.objects.get()
    assert (key.name, key.read_only, key.assistant_ids, key.hashed_key) == ("reader", True, [mine.id], hash_key(raw))
    # The scope holds at once: a read-only key may read its assistant, and nothing else.
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert [a["id"] for a in api.get("/v1/assistants").json()["data"]] == [mine.id]
    refused = api.post("/v1/threads", "{}", content_type="application/json")
    assert (refused.status_code, refused.json()) == (403, {"error": {
        "message": "You have insufficient permissions for this operation: this API key is read-only (GET requests "
                   "only).", "type": "invalid_request_error", "param": None, "code": "insufficient_permissions"}})
    outside = api.get(f"/v1/assistants/{other.id}")
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "insufficient_permissions")


def test_the_add_form_refuses_an_assistant_that_does_not_exist(web):
    Assistant.objects.create(model="echo", name="mine")
    response = web.post("/admin/assistants_api/apikey/add/", {"name": "typo", "assistant_ids": ["asst_nope"]})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "assistant_ids": ["Select a valid choice. asst_nope is not one of the available choices."]}
    assert not ApiKey.objects.exists()


def test_the_changelist_and_change_page_show_each_keys_scope(web):
    mine = Assistant.objects.create(model="echo", name="mine")
    ApiKey.issue("full")
    ApiKey.issue("reader", read_only=True)
    limited, _ = ApiKey.issue("limited", assistant_ids=[mine.id])
    ApiKey.issue("both", read_only=True, assistant_ids=[mine.id])
    listing = web.get("/admin/assistants_api/apikey/")
    assert '<th scope="col" class="column-scope">' in listing.text
    scopes = {key.name: key.scope_label for key in listing.context["cl"].result_list}
    assert scopes == {"full": "Full access", "reader": "Read-only", "limited": f"assistants {mine.id}",
                      "both": f"Read-only; assistants {mine.id}"}
    for label in scopes.values():
        assert f'<td class="field-scope">{label}</td>' in listing.text
    read_only = web.get("/admin/assistants_api/apikey/", {"read_only__exact": "1"})
    assert sorted(k.name for k in read_only.context["cl"].result_list) == ["both", "reader"]
    page = web.get(admin_path(ApiKey, "change", limited.pk))
    assert f'<div class="readonly">assistants {mine.id}</div>' in page.text
    # The scope is fixed once issued: a posted scope is ignored.
    web.post(admin_path(ApiKey, "change", limited.pk), {"name": "renamed", "read_only": "on", "assistant_ids": []})
    limited.refresh_from_db()
    assert (limited.name, limited.read_only, limited.assistant_ids) == ("renamed", False, [mine.id])
