"""Crafted POSTs of the sessions inline: each row needs the permission Django's inlines ask for, owners are users.

The assistant's change form is posted with an edited row (s-1 to one-shot), a row marked for deletion (s-2)
and an extra row (a new session for someone else). Only what the user may do is published; the rest is
ignored as Django ignores it, and the change of the assistant itself goes through.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.forms import ModelChoiceField

from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin import support_form
from tests.test_admin_sessions import published
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def staff_with(*codenames: str):
    """A staff user with change permission on Support and the given permissions on sessions."""
    user = get_user_model().objects.create_user("editor", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="testapp", codename="change_support"),
                              *Permission.objects.filter(content_type__app_label="betaassi_django",
                                                         codename__in=codenames))
    return user


def desk_with_sessions():
    owner = get_user_model().objects.create_user("owner", password="pw")
    desk = Support.objects.create(name="Desk")
    desk.sessions.create("s-1", owner=owner)
    desk.sessions.create("s-2", owner=owner)
    Processor().run_once()
    return desk, owner


def crafted(desk, owner_value, **values) -> dict:
    """The change form with an edited row, a deleted row and an extra row, whatever the page offered."""
    rows = {s.session_id: s.pk for s in Session.objects.filter(assistant_id=desk.id)}
    return support_form(name="Desk", **{
        "sessions-TOTAL_FORMS": "3", "sessions-INITIAL_FORMS": "2",
        "sessions-0-id": str(rows["s-1"]), "sessions-0-kind": "oneshot",
        "sessions-1-id": str(rows["s-2"]), "sessions-1-kind": "default", "sessions-1-DELETE": "on",
        "sessions-2-session_id": "s-new", "sessions-2-owner": str(owner_value), "sessions-2-kind": "default",
        **values})


@pytest.mark.parametrize(("codenames", "expected"), [
    ((), []),
    (("view_session",), []),  # the inline shows read-only; a crafted POST used to publish an update and a create
    (("add_session",), [("session.create", "s-new")]),
    (("change_session",), [("session.update", "s-1")]),
    (("delete_session",), [("session.delete", "s-2")]),
    (("add_session", "change_session", "delete_session"),
     [("session.update", "s-1"), ("session.delete", "s-2"), ("session.create", "s-new")]),
])
def test_each_inline_row_needs_its_session_permission(codenames, expected):
    desk, owner = desk_with_sessions()
    web = client_of(staff_with(*codenames))
    response = web.post(admin_path(Support, "change", desk.id), crafted(desk, owner.pk))
    assert response.status_code == 302
    assert [(e["op"], e["session_id"]) for e in published(desk)[2:]] == expected
    assert sorted(Session.objects.values_list("session_id", "kind")) == [("s-1", "default"), ("s-2", "default")]
    assert [e["args"]["owner"] for e in published(desk)[2:] if e["op"] == "session.create"] == [
        owner.pk for op, _ in expected if op == "session.create"]


def test_a_view_only_inline_renders_without_inputs_for_new_or_deleted_rows():
    desk, _ = desk_with_sessions()
    page = client_of(staff_with("view_session")).get(admin_path(Support, "change", desk.id))
    [inline] = page.context["inline_admin_formsets"]
    assert (inline.has_add_permission, inline.has_change_permission, inline.has_delete_permission,
            inline.has_view_permission) == (False, False, False, True)
    assert inline.formset.max_num == 0 and not inline.formset.can_delete
    assert 'name="sessions-0-kind"' not in page.text and "sessions-0-DELETE" not in page.text


@pytest.mark.parametrize("owner_value", ["owner", "99999", ""])
def test_a_new_sessions_owner_is_chosen_from_users(owner_value, staff):
    desk, _ = desk_with_sessions()
    web = client_of(staff)
    form = web.get(admin_path(Support, "change", desk.id)).context["inline_admin_formsets"][0].formset.forms[-1]
    assert isinstance(form.fields["owner"], ModelChoiceField)
    assert set(form.fields["owner"].queryset) == set(get_user_model().objects.all())
    response = web.post(admin_path(Support, "change", desk.id), crafted(desk, owner_value, **{
        "sessions-0-kind": "default", "sessions-1-DELETE": ""}))
    assert response.status_code == 200
    [formset] = response.context["inline_admin_formsets"]
    assert list(formset.formset.errors[2]) == ["owner"]
    assert len(published(desk)) == 2  # the two creations of the setting, nothing more
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("owner_value", ["owner", "99999"])
def test_the_session_admins_owner_is_chosen_from_users(owner_value, staff):
    desk, _ = desk_with_sessions()
    web = client_of(staff)
    assert isinstance(web.get(admin_path(Session, "add")).context["adminform"].form.fields["owner"], ModelChoiceField)
    response = web.post(admin_path(Session, "add"), {"assistant": desk.id, "session_id": "s-new",
                                                      "owner": owner_value, "kind": "default"})
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["owner"]
    assert len(published(desk)) == 2
