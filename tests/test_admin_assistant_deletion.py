"""Deleting an assistant deletes its sessions: the confirmation page lists them, and it needs delete on sessions.

Sessions are linked to their assistant by id, not by a foreign key; the page lists them as Django lists
related objects, and a user who may delete assistants but not sessions gets Django's "your account doesn't
have permission to delete the following types of objects" page, and a 403 on POST.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

LACKING = "your account doesn't have permission to delete the following types of objects"


def deleter(*session_codenames: str):
    user = get_user_model().objects.create_user("deleter", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="testapp",
                                                         codename__in=["view_support", "delete_support"]),
                              *Permission.objects.filter(content_type__app_label="betaassi_django",
                                                         codename__in=session_codenames))
    return user


def desk_with_sessions(name: str = "Desk", sessions=("s-1", "s-2")):
    owner = get_user_model().objects.get_or_create(username="owner")[0]
    desk = Support.objects.create(name=name)
    for session_id in sessions:
        desk.sessions.create(session_id, owner=owner)
    Processor().run_once()
    return desk


def delete_requests(desk):
    """(GET the confirmation page, POST it) for the change page's delete and for the bulk action."""
    action = {"action": "delete_selected", "_selected_action": [desk.id]}
    return {"delete page": (lambda web: web.get(admin_path(Support, "delete", desk.id)),
                            lambda web: web.post(admin_path(Support, "delete", desk.id), {"post": "yes"})),
            "bulk action": (lambda web: web.post(admin_path(Support, "changelist"), action),
                            lambda web: web.post(admin_path(Support, "changelist"), {**action, "post": "yes"}))}


@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_the_confirmation_lists_the_sessions_and_deleting_takes_them(how):
    desk = desk_with_sessions()
    kept = desk_with_sessions("Kept", ["k-1"])
    web = client_of(deleter("delete_session"))
    show, confirm = delete_requests(desk)[how]
    page = show(web)
    assert page.status_code == 200 and not page.context["perms_lacking"]
    rows = {s.session_id: s.pk for s in Session.objects.all()}
    listed = page.context.get("deleted_objects") or page.context["deletable_objects"]  # the view's, the action's
    name, children = listed[0][:2] if how == "bulk action" else listed[:2]
    assert name.startswith("Support: ")
    assert children == [f'Session: <a href="{admin_path(Session, "change", rows[s])}">{s} (default)</a>'
                        for s in ("s-1", "s-2")]
    assert dict(page.context["model_count"])["sessions"] == 2
    for session_id in ("s-1", "s-2"):
        assert f'{session_id} (default)</a>' in page.text
    response = confirm(web)
    assert response.status_code == 302
    assert list(Support.objects.values_list("name", flat=True)) == ["Kept"]
    assert list(Session.objects.values_list("assistant_id", "session_id")) == [(kept.id, "k-1")]


@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_without_delete_on_sessions_the_delete_is_refused(how):
    desk = desk_with_sessions()
    web = client_of(deleter())
    show, confirm = delete_requests(desk)[how]
    page = show(web)
    assert page.status_code == 200
    assert page.context["perms_lacking"] == {"session"}
    assert LACKING in page.text.replace("&#x27;", "'")
    assert confirm(web).status_code == 403
    assert Support.objects.filter(pk=desk.pk).exists()
    assert sorted(Session.objects.values_list("session_id", flat=True)) == ["s-1", "s-2"]


@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_an_assistant_without_sessions_needs_no_permission_on_sessions(how):
    desk = desk_with_sessions(sessions=())
    web = client_of(deleter())
    show, confirm = delete_requests(desk)[how]
    page = show(web)
    assert page.status_code == 200 and not page.context["perms_lacking"]
    assert "sessions" not in dict(page.context["model_count"])
    assert confirm(web).status_code == 302
    assert not Support.objects.exists()
