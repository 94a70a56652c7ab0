"""The app's own login and logout (``betaassi_django.auth_urls``): no template or redirect setting to add."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(visitor):
    """The pages as a visitor sees them before logging in (conftest's ``web`` is logged in as staff)."""
    return visitor


def test_no_redirect_settings_needed():
    from project import settings as project_settings

    assert not {"LOGIN_URL", "LOGIN_REDIRECT_URL", "LOGOUT_REDIRECT_URL"} & set(vars(project_settings))
    assert (reverse("login"), reverse("logout")) == ("/accounts/login/", "/accounts/logout/")
    assert reverse("password_change") == "/accounts/password_change/"  # the rest of django.contrib.auth.urls


def test_the_login_page_is_the_packages_and_looks_like_the_app(web):
    page = web.get("/accounts/login/?next=/")
    assert page.status_code == 200
    assert [t.name for t in page.templates][:2] == ["registration/login.html", "betaassi_django/base.html"]
    assert page.templates[0].origin.name.endswith("betaassi_django/templates/registration/login.html")
    html = page.content.decode()
    assert "<title>Log in · betaassi</title>" in html and '<h1>Log in</h1>' in html
    assert '<form method="post" action="/accounts/login/">' in html
    assert '<input type="hidden" name="next" value="/">' in html
    assert 'id="logout"' not in html  # nobody to log out yet


def test_login_goes_to_the_session_list(web, alice):
    response = web.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1"})
    assert response.status_code == 302 and response["Location"] == reverse("betaassi:sessions") == "/"


def test_login_follows_next(web, alice):
    response = web.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1",
                                             "next": "/chat/asst_1/s1/"})
    assert response.status_code == 302 and response["Location"] == "/chat/asst_1/s1/"
    elsewhere = web.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1",
                                              "next": "https://evil.example/"})
    assert elsewhere["Location"] == "/"  # not a host of this site: the session list


def test_a_wrong_password_stays_on_the_page(web, alice):
    page = web.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert page.status_code == 200
    assert "Your username and password did not match. Please try again." in page.content.decode()


def test_logout_is_a_post_from_the_header_and_returns_to_login(web, alice):
    web.force_login(alice)
    page = web.get("/").content.decode()
    assert '<form method="post" action="/accounts/logout/">' in page and 'id="logout"' in page
    assert web.get("/accounts/logout/").status_code == 405  # Django 5: logging out takes a POST
    response = web.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert web.get("/")["Location"] == "/accounts/login/?next=/"


@pytest.mark.parametrize("username", ["alice\x00", "a" * 100_000, "alice' OR '1'='1"])
def test_hostile_usernames_get_the_page_again_not_a_500(web, alice, username):
    page = web.post("/accounts/login/", {"username": username, "password": "secret-pass-1"})
    assert page.status_code == 200
    assert "_auth_user_id" not in web.session


def test_undecodable_bytes_are_a_failed_login_not_a_500(web, alice):
    body = b"username=alice%ED%A0%80&password=secret-pass-1"  # a lone surrogate, percent-encoded as UTF-8 bytes
    page = web.post("/accounts/login/", body, content_type="application/x-www-form-urlencoded")
    assert page.status_code == 200 and "_auth_user_id" not in web.session


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "https:evil.example", "\x00/", "/" * 5000])
def test_next_never_leaves_the_site(web, alice, target):
    response = web.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1", "next": target})
    assert response.status_code == 302
    assert response["Location"] in {"/", target} and not response["Location"].startswith(("//", "/\\", "https:"))


def test_the_login_form_needs_its_csrf_token(alice):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    assert browser.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1"}).status_code == 403
    page = browser.get("/accounts/login/")
    token = page.cookies["csrftoken"].value
    response = browser.post("/accounts/login/", {"username": "alice", "password": "secret-pass-1",
                                                 "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"
