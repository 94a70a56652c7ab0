"""The operator's limits (quotas, the model allow-list) refuse a session in the admin as errors on the named
field, before anything is published: in the session admin and in each row of the assistant's inline."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin import support_form
from tests.test_admin_sessions import published
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

NOT_ALLOWED = "model 'o1-pro-expensive' is not allowed for this assistant; allowed: gpt-4o, gpt-4o-mini, m*"
OVER_QUOTA = "owner already has 1 session in all; the limit is 1"


def desk_of(owner):
    desk = Support.objects.create(name="Desk", model="gpt-4o")
    desk.sessions.create("s-1", owner=owner)
    Processor().run_once()
    return desk


@pytest.fixture
def owner():
    return get_user_model().objects.create_user("owner", password="pw")


@pytest.mark.parametrize(("values", "field", "error"), [
    ({"model": "o1-pro-expensive"}, "model", NOT_ALLOWED),
    ({"model": "mistral-small"}, None, None),  # "m*" on the allow-list
    ({}, "owner", OVER_QUOTA),
])
def test_the_session_admin_shows_a_limit_on_its_field(staff, owner, settings, values, field, error):
    settings.BETAASSI_MAX_SESSIONS_PER_USER = 1 if field == "owner" else 0
    desk = desk_of(owner)
    response = client_of(staff).post(admin_path(Session, "add"), {
        "assistant": desk.id, "session_id": "s-2", "owner": owner.pk, "kind": "default", **values})
    if error is None:
        assert response.status_code == 302 and [e["session_id"] for e in published(desk)] == ["s-1", "s-2"]
        return
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [error]}
    assert len(published(desk)) == 1


def test_the_session_admin_refuses_changing_to_a_model_off_the_list(staff, owner):
    desk = desk_of(owner)
    session = Session.objects.get()
    response = client_of(staff).post(admin_path(Session, "change", session.pk), {"kind": "default",
                                                                                 "model": "o1-pro-expensive"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"model": [NOT_ALLOWED]}
    assert len(published(desk)) == 1


@pytest.mark.parametrize("row", ["new", "edited"])
def test_the_inline_shows_a_limit_on_the_rows_field_and_publishes_nothing(staff, owner, settings, row):
    settings.BETAASSI_MAX_SESSIONS_PER_USER = 0
    desk = desk_of(owner)
    session = Session.objects.get()
    rows = {"sessions-TOTAL_FORMS": "2", "sessions-INITIAL_FORMS": "1", "sessions-0-id": str(session.pk),
            "sessions-0-kind": "oneshot", "sessions-1-session_id": "s-2", "sessions-1-owner": str(owner.pk),
            "sessions-1-kind": "default"}
    rows[f"sessions-{0 if row == 'edited' else 1}-model"] = "o1-pro-expensive"
    response = client_of(staff).post(admin_path(Support, "change", desk.id), support_form(name="Desk 2", **rows))
    assert response.status_code == 200
    [formset] = response.context["inline_admin_formsets"]
    assert formset.formset.errors == [{"model": [NOT_ALLOWED]}, {}][:: 1 if row == "edited" else -1]
    assert len(published(desk)) == 1
    assert Support.objects.get().name == "Desk"
