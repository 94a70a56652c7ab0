"""Who may do what in the admin: every page, action and custom view of this app, for users with each single
permission, GET and POST, allowed exactly where Django's conventions allow.

Each user's row is one test: a fresh desk (one applied session owned by someone else) and a spare assistant,
then every request in order, destructive ones last. A request's outcome is one letter:

    Y  allowed (a GET answers 200; a POST changed state, its admin log entry included)
    R  the page answers 200 read-only (no save / apply buttons)
    P  the delete page answers 200 saying which related objects the user may not delete
    n  a POST answered 302 and changed nothing (an action the user is not offered: "No action selected")
    -  403, nothing changed
    L  302 to the admin's login page, nothing changed
    !  anything else (a refused request that changed state, a GET that changed state, an unexpected status)
"""

from __future__ import annotations

import openai
import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from betaassi_django.client import get_client
from betaassi_django.models import Session
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin import support_form
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

#: The permissions behind each user's name (an app label and a codename each).
PERMISSIONS = {
    "view_assistant": ["testapp.view_support"],
    "change_assistant": ["testapp.change_support"],
    "view_session": ["betaassi_django.view_session"],
    "change_session": ["betaassi_django.change_session"],
    "add_session": ["betaassi_django.add_session"],
    "delete_session": ["betaassi_django.delete_session"],
    "delete_assistant": ["testapp.delete_support", "testapp.view_support"],
    "add_apikey": ["assistants_api.add_apikey"],
}

#: Every request, in the order each user makes them (the assistant deletions last).
CASES = [
    "assistants changelist GET", "assistant add GET", "assistant add POST", "assistant change GET",
    "assistant change POST", "assistant history GET", "queue page GET", "queue apply now POST", "queue sync POST",
    "apply now action POST", "sync action POST", "sync all POST", "sync all GET",
    "sessions changelist GET", "session add GET", "session add POST", "session change GET", "session change POST",
    "session history GET", "session delete GET", "session delete POST", "sessions delete action POST",
    "assistant delete GET", "assistant delete POST", "assistants delete action POST",
]

#: user -> one letter per case, in CASES' order (spaces group them as CASES' lines do).
EXPECTED = {
    "superuser":        "YYYYY YYYY YYY- YYYYY YYYY YYY",
    "staff":            "----- ---- ---- ----- ---- ---",
    "view_assistant":   "R--R- YR-- nn-- ----- ---- --n",
    "change_assistant": "Y--YY YYYY YYY- ----- ---- --n",
    "view_session":     "----- ---- ---- Y--R- Y--n ---",
    "change_session":   "----- ---- ---- Y--YY Y--n ---",
    "add_session":      "----- ---- ---- -YY-- ---- ---",
    "delete_session":   "----- ---- ---- ----- -YY- ---",
    "delete_assistant": "R--R- YR-- nn-- ----- ---- P--",
    "add_apikey":       "----- ---- ---- ----- ---- ---",
    "non_staff":        "LLLLL LLLL LLLL LLLLL LLLL LLL",
}


def make_user(name: str):
    users = get_user_model().objects
    if name == "superuser":
        return users.create_superuser("root", "root@example.com", "pw")
    user = users.create_user(name, password="pw", is_staff=name != "non_staff")
    for permission in PERMISSIONS.get(name, []):
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def published_count(assistant) -> int:
    """Events on the assistant's publish thread, read through the SDK (-1 once the assistant is deleted)."""
    try:
        listed = get_client().beta.threads.messages.list(assistant.metadata[PUBLISH_KEY], limit=100)
    except openai.NotFoundError:
        return -1
    return len(listed.data)


def fingerprint(*assistants) -> tuple:
    """Everything a request could change: assistants, session rows, published events, the admin log."""
    return (sorted(Support.objects.values_list("id", "name")),
            sorted(Session.objects.values_list("assistant_id", "session_id", "kind")),
            [published_count(a) for a in assistants], LogEntry.objects.count())


def setting():
    """The desk (one applied session, owned by someone else), a spare, and that owner."""
    owner = get_user_model().objects.create_user("owner", password="pw")
    desk, spare = Support.objects.create(name="Desk"), Support.objects.create(name="Spare")
    desk.sessions.create("s-1", owner=owner)
    spare.sessions.create("t-1", owner=owner)
    Processor().run_once()
    return desk, spare, owner


def requests_of(desk, spare, owner) -> list[tuple[str, str, dict | None]]:
    """(method, path, POST data) for each of CASES."""
    session = Session.objects.get(assistant_id=desk.id, session_id="s-1")
    assistant_action = {"_selected_action": [desk.id]}
    return [
        ("GET", admin_path(Support, "changelist"), None),
        ("GET", admin_path(Support, "add"), None),
        ("POST", admin_path(Support, "add"), support_form(name="New")),
        ("GET", admin_path(Support, "change", desk.id), None),
        ("POST", admin_path(Support, "change", desk.id), support_form(name="Desk 2")),
        ("GET", admin_path(Support, "history", desk.id), None),
        ("GET", admin_path(Support, "queue", desk.id), None),
        ("POST", admin_path(Support, "queue", desk.id), {"apply": "1"}),
        ("POST", admin_path(Support, "queue", desk.id), {"sync": "1"}),
        ("POST", admin_path(Support, "changelist"), {"action": "apply_pending_now", **assistant_action}),
        ("POST", admin_path(Support, "changelist"), {"action": "sync_from_backend", **assistant_action}),
        ("POST", admin_path(Support, "sync"), {}),
        ("GET", admin_path(Support, "sync"), None),
        ("GET", admin_path(Session, "changelist"), None),
        ("GET", admin_path(Session, "add"), None),
        ("POST", admin_path(Session, "add"), {"assistant": desk.id, "session_id": "s-new", "owner": owner.pk,
                                               "kind": "default"}),
        ("GET", admin_path(Session, "change", session.pk), None),
        ("POST", admin_path(Session, "change", session.pk), {"kind": "oneshot"}),
        ("GET", admin_path(Session, "history", session.pk), None),
        ("GET", admin_path(Session, "delete", session.pk), None),
        ("POST", admin_path(Session, "delete", session.pk), {"post": "yes"}),
        ("POST", admin_path(Session, "changelist"), {"action": "delete_selected", "_selected_action": [session.pk],
                                                     "post": "yes"}),
        ("GET", admin_path(Support, "delete", desk.id), None),
        ("POST", admin_path(Support, "delete", desk.id), {"post": "yes"}),
        ("POST", admin_path(Support, "changelist"), {"action": "delete_selected", "_selected_action": [spare.id],
                                                     "post": "yes"}),
    ]


def outcome(method: str, response, changed: bool) -> str:
    """The letter for one response (see the module's docstring)."""
    status, context = response.status_code, response.context or {}
    if status == 302 and response["Location"].startswith("/admin/login/"):
        letter = "L"
    elif status == 403:
        letter = "-"
    elif method == "POST":
        return ("Y" if changed else "n") if status in (200, 302) else "!"
    elif status == 200 and context.get("perms_lacking"):
        letter = "P"
    elif status == 200 and not context.get("add") and context.get("has_change_permission") is False:
        letter = "R"
    else:
        letter = "Y" if status == 200 else "!"
    return "!" if changed else letter


@pytest.mark.parametrize("user_name", list(EXPECTED))
def test_the_permission_matrix(user_name):
    desk, spare, owner = setting()
    web = client_of(make_user(user_name))
    found = []
    for method, path, data in requests_of(desk, spare, owner):
        before = fingerprint(desk, spare)
        response = web.get(path) if method == "GET" else web.post(path, data)
        after = fingerprint(desk, spare)
        found.append(outcome(method, response, after != before))
        if found[-1] == "!":
            print(user_name, path, data, before, after)
    expected = EXPECTED[user_name].replace(" ", "")
    assert dict(zip(CASES, found, strict=True)) == dict(zip(CASES, expected, strict=True))
