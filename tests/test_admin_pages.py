"""The admin's pages as rendered: every link on them is followed, the assistant is named by its name, ids are
shortened with the whole id on hover, times read "just now" rather than "0 minutes ago".

Assistant ids always hold ``_`` (``asst_...``), which the admin quotes as ``_5F`` in its URLs; ``odd`` (from
tests/test_admin_urls.py) holds ``_5F_3E`` too, which a raw id in a URL would turn into another id.
"""

from __future__ import annotations

import datetime
import html
import re
from urllib.parse import urljoin, urlsplit

import pytest
from django.utils import timezone

from betaassi_django.models import Assistant, Session
from betaassi_django.templatetags.betaassi import ago, short_id, shorten, when_cell
from tests.admin_paths import admin_path
from tests.test_admin_urls import odd  # noqa: F401 (a fixture)
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def admin_links(page) -> list[str]:
    """Every ``<a href>`` of a rendered page that leads into the admin, as absolute paths (query strings kept)."""
    base = page.wsgi_request.get_full_path()
    hrefs = {urljoin(base, html.unescape(h)) for h in re.findall(r'<a [^>]*href="([^"]*)"', page.content.decode())}
    return sorted(h for h in hrefs if urlsplit(h).path.startswith("/admin/"))


def follow_all(web, path: str) -> list[str]:
    """GET ``path``, then every admin link on it; asserts none answers 404 or 500. Returns the links."""
    page = web.get(path)
    assert page.status_code == 200, path
    links = admin_links(page)
    broken = [(link, status) for link in links if (status := web.get(link).status_code) not in (200, 302)]
    assert broken == [], f"links on {path} that fail: {broken}"
    return links


def test_every_link_on_an_assistants_change_page_works(web, odd):  # noqa: F811
    links = follow_all(web, admin_path(Support, "change", odd.id))
    # The links the page is about, with the id quoted as the admin quotes it: each one was followed above.
    for view in ("queue", "history", "delete", "changelist"):
        assert admin_path(Support, view, None if view == "changelist" else odd.id) in links, view
    assert admin_path(Session, "changelist", assistant=odd.id) in links
    assert "_5F" in admin_path(Support, "queue", odd.id)


def test_every_link_on_the_queue_page_and_the_changelists_works(web, odd):  # noqa: F811
    odd.sessions.update("s-1", kind="oneshot")  # a pending event: the queue page lists it
    queue = follow_all(web, admin_path(Support, "queue", odd.id))
    assert admin_path(Support, "change", odd.id) in queue
    sessions = follow_all(web, admin_path(Session, "changelist"))
    assert admin_path(Support, "change", odd.id) in sessions  # the assistant column links its page
    assert [s for s in sessions if "/session/" in s and s.endswith("/change/")]  # each session's page
    follow_all(web, admin_path(Session, "changelist", assistant=odd.id))
    listing = follow_all(web, admin_path(Support, "changelist"))
    assert admin_path(Support, "queue", odd.id) in listing


def test_the_change_page_is_titled_and_crumbed_with_the_assistants_name(web):
    named = Support.objects.create(name="Front desk")
    bare = Support.objects.create(name="")
    page = web.get(admin_path(Support, "change", named.id))
    text = page.content.decode()
    assert "<title>Front desk | Change support | Django site admin</title>" in text
    assert re.search(r"&rsaquo; Front desk\s*</div>", text)
    assert "<h2>Front desk</h2>" in text
    page = web.get(admin_path(Support, "change", bare.id)).content.decode()
    assert f"<title>{bare.id} | Change support | Django site admin</title>" in page
    assert re.search(rf"&rsaquo; {bare.id}\s*</div>", page)


def test_ids_are_shortened_with_the_whole_id_on_hover(web, staff):
    desk = Assistant.objects.create(name="", model="gpt-4o-mini")
    assert shorten(desk.id) == f"asst_{desk.id[5:9]}…{desk.id[-5:]}"
    assert short_id(desk.id) == f'<span class="short-id" title="{desk.id}">{shorten(desk.id)}</span>'
    assert shorten("s_3") == "s_3" and short_id("s_3") == "s_3"
    listing = web.get(admin_path(Assistant, "changelist")).content.decode()
    assert f'<td class="field-backend_id">{short_id(desk.id)}</td>' in listing
    desk.sessions.create("s-1", owner=staff)  # pending: the sessions list shows its event, shortened
    sessions = web.get(admin_path(Session, "changelist", assistant=desk.id))
    event_id = sessions.context["cl"].pending_creations[0]["event_id"]
    assert f"<code>{short_id(event_id)}</code>" in sessions.content.decode()


def test_times_read_just_now_under_a_minute():
    assert ago(None) == ""
    assert [ago(NOW - datetime.timedelta(seconds=s), NOW) for s in (0, 59)] == ["just now", "just now"]
    # Django's timesince keeps the number and its unit together with a no-break space.
    assert ago(NOW - datetime.timedelta(seconds=60), NOW) == "1\xa0minute ago"
    assert ago(NOW - datetime.timedelta(minutes=5, seconds=30), NOW) == "5\xa0minutes ago"
    assert ago(NOW - datetime.timedelta(days=2, hours=3), NOW) == "2\xa0days ago"
    assert when_cell(None) == "-"


def test_the_sessions_list_says_just_now_and_never_zero_minutes(web, staff):
    desk = Assistant.objects.create(name="Desk", model="gpt-4o-mini")
    desk.sessions.create("fresh", owner=staff)
    desk.sessions.create("older", owner=staff)
    from betaassi_django.publishing.processor import Processor

    Processor().run_once()
    Session.objects.filter(session_id="fresh").update(touched_at=timezone.now())
    Session.objects.filter(session_id="older").update(touched_at=timezone.now() - datetime.timedelta(minutes=7))
    for path in (admin_path(Session, "changelist"), admin_path(Assistant, "change", desk.id)):
        text = web.get(path).content.decode()
        cells = re.findall(r'<time datetime="[^"]+" title="[^"]+">([^<]*)</time>', text)
        assert cells == ["just now", "7\xa0minutes ago"], path
        assert "0\xa0minutes" not in text and "0 minutes" not in text
