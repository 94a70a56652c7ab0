"""Admin pages and actions of assistants whose ids hold ``_XX``: every link is followed as a browser would.

Django's admin unquotes ``_XX`` (two upper-case hex digits) in an object id, so
about one random embedded id in 15 (``asst_3ETiIH5...``) breaks a URL made from
the raw id. Here the embedded backend holds assistants under chosen ids with
``_5F`` and ``_3E``: each is created as usual, then its row in the backend's own
table takes the chosen id (nothing refers to a new assistant's id yet) and the
mirror is read again from the backend. Pages are reached by the hrefs the admin
rendered, never by URLs the test formats.
"""

from __future__ import annotations

import html
import re
import secrets
import string

import openai
import pytest

from betaassi_django.assistants_api.models import Assistant as StoredAssistant
from betaassi_django.client import get_client
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.admin_paths import admin_path
from tests.test_admin import shown, support_form
from tests.test_admin_sessions import inline
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

ALPHABET = string.ascii_letters + string.digits


def chosen_id(head: str, tail: str | None = None) -> str:
    """``asst_`` + ``head`` + random letters: 24 characters after ``asst_``, as the embedded API's own ids."""
    tail = tail if tail is not None else "".join(secrets.choice(ALPHABET) for _ in range(24 - len(head)))
    return f"asst_{head}{tail}"


def under_id(assistant, new_id: str):
    """The assistant as the backend would hold it had it issued ``new_id``: its stored row renamed, mirrored again."""
    assert StoredAssistant.objects.filter(id=assistant.id).update(id=new_id) == 1
    assistant.forget()
    return type(assistant).retrieve(new_id)


def href(page, pattern: str, before: str = "") -> str:
    """The first href of the rendered page whose ``<a ...>`` tag has ``before`` ahead of it, ``pattern`` after."""
    match = re.search(r"<a " + before + r'href="([^"]+)"' + pattern, page.content.decode())
    assert match, f"no link matching {pattern!r}"
    return html.unescape(match[1])


@pytest.fixture
def odd(staff):
    """Odd desk, id ``asst_5F_3E...``: a raw id in its URLs would name ``asst_>...``. Two applied sessions."""
    desk = under_id(Support.objects.create(name="Odd desk", tier=2), chosen_id("5F_3E"))
    assert desk.id.startswith("asst_5F_3E") and Support.objects.get().id == desk.id
    desk.sessions.create("s-1", owner=staff)
    desk.sessions.create("s-2", owner=staff)
    Processor().run_once()
    return desk


def test_a_raw_id_in_an_admin_url_misses_the_assistant(web, odd):
    """Why every URL quotes: Django reads the raw id as another one (``asst_>...``) and sends staff away."""
    raw = web.get(f"/admin/testapp/support/{odd.id}/change/")
    assert raw.status_code == 302 and raw["Location"] == "/admin/"
    assert web.get(admin_path(Support, "change", odd.id)).status_code == 200


def test_the_changelist_links_reach_the_change_page_and_the_queue(web, odd):
    listing = web.get(admin_path(Support, "changelist"))
    assert listing.status_code == 200
    change_url = href(listing, r">Odd desk</a>")
    queue_url = href(listing, r">0</a>")  # the queue lag, a link to the queue page
    assert (change_url, queue_url) == (admin_path(Support, "change", odd.id), admin_path(Support, "queue", odd.id))
    change = web.get(change_url)
    assert change.status_code == 200 and change.context["original"].id == odd.id
    queue = web.get(queue_url)
    assert queue.status_code == 200 and queue.context["original"].id == odd.id and queue.context["lag"] == "0"


def test_the_publish_queue_button_then_apply_now_and_sync(web, odd):
    odd.sessions.update("s-1", kind="oneshot")  # pending: the queue page shows a lag of 1
    change = web.get(admin_path(Support, "change", odd.id))
    queue_url = href(change, r' class="queue-link">Publish queue</a>')
    queue = web.get(queue_url)
    assert queue.status_code == 200 and queue.context["original"].id == odd.id and queue.context["lag"] == "1"
    assert web.get(href(queue, r">Odd desk</a> <code>")).context["original"].id == odd.id  # back to the change page

    applied = web.post(queue_url, {"apply": "1"})
    assert applied.status_code == 302 and applied["Location"] == queue_url
    assert shown(applied) == ["Odd desk: 1 event(s) processed; nothing is pending."]
    assert Session.objects.get(session_id="s-1").kind == "oneshot"
    after = web.get(queue_url)
    assert after.context["lag"] == "0" and [e["status"] for e in after.context["events"]][:1] == ["applied"]

    synced = web.post(queue_url, {"sync": "1"})
    assert synced.status_code == 302 and synced["Location"] == queue_url
    assert shown(synced) == ["Odd desk synced from the backend: 2 session(s)."]


def test_the_changelist_actions(web, odd):
    odd.sessions.update("s-2", model="m-2")
    selected = {"_selected_action": [odd.id]}  # actions post raw primary keys, as the changelist's checkboxes do
    applied = web.post(admin_path(Support, "changelist"), {"action": "apply_pending_now", **selected})
    assert applied.status_code == 302 and shown(applied) == ["Odd desk: 1 event(s) processed; nothing is pending."]
    assert Session.objects.get(session_id="s-2").model == "m-2"
    synced = web.post(admin_path(Support, "changelist"), {"action": "sync_from_backend", **selected})
    assert synced.status_code == 302 and shown(synced) == ["Odd desk synced from the backend: 2 session(s)."]


def test_the_change_form_and_its_sessions_inline(web, staff, odd):
    one, two = Session.objects.order_by("session_id")
    rows = [{"id": str(one.pk), "kind": "manyshots", "context_messages": "3", "model": ""},
            {"id": str(two.pk), "kind": "default", "context_messages": "", "model": ""}]
    change_url = admin_path(Support, "change", odd.id)
    saved = web.post(change_url, {**support_form(name="Odd desk 2", tier="7"), **inline(initial=2, forms=rows)})
    assert saved.status_code == 302, saved.context and saved.context["errors"]
    remote = get_client().beta.assistants.retrieve(odd.id)
    assert (remote.name, remote.metadata["tier"]) == ("Odd desk 2", "7")
    Processor().run_once()
    assert (Session.objects.get(pk=one.pk).kind, Session.objects.get(pk=one.pk).context_messages) == ("manyshots", 3)

    page = web.get(change_url)
    sessions_url = href(page, r">These sessions in the sessions list</a>")
    assert sessions_url == admin_path(Session, "changelist", assistant=odd.id)
    listing = web.get(sessions_url)
    assert listing.status_code == 200
    assert [s.session_id for s in listing.context["cl"].result_list] == ["s-1", "s-2"]

    session_page = web.get(href(listing, r">s-1</a>"))
    assert session_page.status_code == 200 and session_page.context["original"].pk == one.pk
    back = web.get(href(session_page, r">Odd desk 2</a>"))  # the session's assistant link
    assert back.status_code == 200 and back.context["original"].id == odd.id
    chat = web.get(href(session_page, r">open</a>", before='class="chat-link" '))
    assert chat.status_code == 200 and chat.context["session"].pk == one.pk


def test_delete_from_the_change_page(web, odd):
    change = web.get(admin_path(Support, "change", odd.id))
    delete_url = href(change, r' class="deletelink">')
    confirm = web.get(delete_url)
    assert confirm.status_code == 200 and confirm.context["object"].id == odd.id
    deleted = web.post(delete_url, {"post": "yes"})
    assert deleted.status_code == 302 and deleted["Location"] == admin_path(Support, "changelist")
    with pytest.raises(openai.NotFoundError):
        get_client().beta.assistants.retrieve(odd.id)
    assert not Support.objects.exists() and not Session.objects.exists()


def test_an_id_whose_unquoted_form_is_another_assistant(web):
    """``asst_5FR`` unquoted is ``asst_R``: with a raw id the admin would show (and change) the other one."""
    tail = "".join(secrets.choice(ALPHABET) for _ in range(22))
    quoted_one = under_id(Support.objects.create(name="Five F"), chosen_id("5F", tail))
    twin = under_id(Support.objects.create(name="Twin"), chosen_id("", tail))
    assert quoted_one.id == f"asst_5F{tail}" and twin.id == f"asst_{tail}"
    assert web.get(f"/admin/testapp/support/{quoted_one.id}/change/").context["original"].id == twin.id  # the trap
    for view in ("change", "queue", "delete"):
        page = web.get(admin_path(Support, view, quoted_one.id))
        assert page.status_code == 200
        assert (page.context.get("original") or page.context["object"]).id == quoted_one.id
    queue_url = href(web.get(admin_path(Support, "change", quoted_one.id)), r' class="queue-link">')
    assert web.get(queue_url).context["original"].id == quoted_one.id
