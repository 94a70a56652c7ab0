"""Configuration checks name what a project is missing, each with its own id and the setting that fixes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.conf import settings as django_settings
from django.core import checks

from betaassi_django.checks import CONFIGURATION_CHECKS
from betaassi_django.checks.config import (
    check_asgi_application,
    check_channel_layer,
    check_embedded_backend,
    check_processor,
    check_redis_timeouts,
    check_sqlite_locking,
)

REDIS_LAYER = "channels_redis.core.RedisChannelLayer"


def _ids(check) -> list[str]:
    return [message.id for message in check()]


def _all_ids() -> list[str]:
    return [message.id for check in CONFIGURATION_CHECKS for message in check()]


def test_registered_with_the_compatibility_tag():
    registered = checks.registry.registry.get_checks()
    for check in CONFIGURATION_CHECKS:
        assert check in registered and check.tags == (checks.Tags.compatibility,)


def test_the_test_settings_pass():
    assert _all_ids() == []


def test_no_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}
    [error] = check_channel_layer()
    assert error.id == "betaassi.E010" and isinstance(error, checks.Error)
    assert error.msg == ("No channel layer: CHANNEL_LAYERS has no 'default' layer, so every chat WebSocket fails "
                         "to connect and applied events reach no page.")
    assert 'CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}' in error.hint
    del settings.CHANNEL_LAYERS
    assert _ids(check_channel_layer) == ["betaassi.E010"]


def test_a_channel_layer_that_cannot_be_built(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no_such_module.Layer"}}
    [error] = check_channel_layer()
    assert error.id == "betaassi.E010"
    assert error.msg == ("The default channel layer cannot be built: InvalidChannelLayerError: "
                         "Cannot import BACKEND 'no_such_module.Layer' specified for default")
    assert error.hint.startswith("Fix CHANNEL_LAYERS['default']. Add CHANNEL_LAYERS = ")


def test_a_redis_layer_builds_without_connecting(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": REDIS_LAYER, "CONFIG": {"hosts": [
        {"address": "redis://127.0.0.1:1", "socket_timeout": 15}]}}}
    assert _all_ids() == []  # nothing listens on port 1: the check builds the layer, it does not connect


def test_embedded_backend_needs_its_app(settings):
    settings.BETAASSI_BACKEND = "remote"
    assert _ids(check_embedded_backend) == []
    settings.BETAASSI_BACKEND = "embedded"
    assert _ids(check_embedded_backend) == []  # installed here; the subprocess test below removes it


def test_asgi_application_missing(settings):
    del settings.ASGI_APPLICATION
    [error] = check_asgi_application()
    assert error.id == "betaassi.E012"
    assert error.msg == "ASGI_APPLICATION is not set: runserver (with daphne installed) cannot serve WebSockets."
    assert error.hint.startswith('Set ASGI_APPLICATION = "tests.asgi.application"')  # from SETTINGS_MODULE


@pytest.mark.parametrize("value", [True, False])
def test_processor_chosen_in_settings(settings, monkeypatch, value):
    monkeypatch.delenv("BETAASSI_IN_SERVER_PROCESSOR", raising=False)
    settings.BETAASSI_IN_SERVER_PROCESSOR = value
    assert _ids(check_processor) == []


def test_processor_chosen_in_the_environment_or_not_at_all(settings, monkeypatch):
    del settings.BETAASSI_IN_SERVER_PROCESSOR
    monkeypatch.setenv("BETAASSI_IN_SERVER_PROCESSOR", "false")
    assert _ids(check_processor) == []
    monkeypatch.delenv("BETAASSI_IN_SERVER_PROCESSOR")
    [warning] = check_processor()
    assert warning.id == "betaassi.W010" and isinstance(warning, checks.Warning)
    assert warning.hint == (
        "Set BETAASSI_IN_SERVER_PROCESSOR = True to run the processor inside the web process (one daphne process, "
        "development), or run `python manage.py process_publish_queue` beside daphne and set "
        "BETAASSI_IN_SERVER_PROCESSOR = False (production, with Redis).")


@pytest.mark.parametrize(("hosts", "ids"), [
    (["redis://127.0.0.1:6379"], ["betaassi.W011"]),
    ([("127.0.0.1", 6379)], ["betaassi.W011"]),
    ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 5}], ["betaassi.W011"]),
    ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 15}], []),
    (["redis://127.0.0.1:6379?socket_timeout=15"], []),
    (["redis://127.0.0.1:6379?socket_timeout=15", "redis://127.0.0.1:6380"], ["betaassi.W011"]),
])
def test_redis_read_timeout(settings, hosts, ids):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": REDIS_LAYER, "CONFIG": {"hosts": hosts}}}
    assert _ids(check_redis_timeouts) == ids


def test_redis_warning_text(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "betaassi_django.layers.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}
    [warning] = check_redis_timeouts()
    assert warning.msg == (
        "CHANNEL_LAYERS['default']: Redis host 'redis://127.0.0.1:6379' has socket_timeout=None (redis-py 8 "
        "defaults to 5 s), no more than the 5 s channels-redis blocks on an idle channel: idle WebSockets close "
        "with 1011.")
    assert warning.hint == ('Give each host as a dict with a longer read timeout: {"address": REDIS_URL, '
                            '"socket_timeout": 15, "socket_connect_timeout": 5}.')


SQLITE = "django.db.backends.sqlite3"


@pytest.mark.parametrize(("database", "ids"), [
    ({"ENGINE": SQLITE, "NAME": "x"}, ["betaassi.W012"]),
    ({"ENGINE": SQLITE, "NAME": "x", "OPTIONS": {"timeout": 30}}, ["betaassi.W012"]),
    ({"ENGINE": SQLITE, "NAME": "x", "OPTIONS": {"transaction_mode": "IMMEDIATE"}}, ["betaassi.W012"]),
    ({"ENGINE": SQLITE, "NAME": "x", "OPTIONS": {"transaction_mode": "immediate", "timeout": 30}}, []),
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "x"}, []),
])
def test_sqlite_locking(monkeypatch, database, ids):
    # Only the check reads this dict; the test database's connection is left as it is.
    monkeypatch.setitem(django_settings.DATABASES, "default", database)
    assert _ids(check_sqlite_locking) == ids


def _manage_check(tmp_path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "checksettings.py").write_text(textwrap.dedent(source))
    (tmp_path / "checkurls.py").write_text(  # without /v1: its views need the API's app
        "from django.urls import include, path\n"
        "urlpatterns = [path('accounts/', include('django.contrib.auth.urls')),\n"
        "               path('', include('betaassi_django.urls'))]\n")
    env = {"PYTHONPATH": f"{tmp_path}:{django_settings.BASE_DIR}", "DJANGO_SETTINGS_MODULE": "checksettings",
           "PATH": "/usr/bin:/bin", "SECRET_KEY": "x" * 50}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=django_settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)


def test_manage_check_on_a_bare_project(tmp_path):
    """A startproject-like settings module with the app added and nothing else: every missing piece is named."""
    done = _manage_check(tmp_path, """
        INSTALLED_APPS = ["daphne", "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                          "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
                          "channels", "betaassi_django"]
        MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
                      "django.middleware.csrf.CsrfViewMiddleware",
                      "django.contrib.auth.middleware.AuthenticationMiddleware",
                      "django.contrib.messages.middleware.MessageMiddleware"]
        TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                      "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                         "django.contrib.auth.context_processors.auth",
                                                         "django.contrib.messages.context_processors.messages"]}}]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "unused.sqlite3"}}
        ROOT_URLCONF = "checkurls"
        SECRET_KEY = "x" * 50
        """)
    assert done.returncode == 1, done.stderr
    ids = sorted(set(word.strip("():") for word in done.stderr.split() if word.startswith("(betaassi.")))
    assert ids == ["betaassi.E010", "betaassi.E011", "betaassi.E012", "betaassi.W010", "betaassi.W012"]
    assert ('HINT: Set ASGI_APPLICATION = "checksettings.asgi.application"' not in done.stderr)  # no package
    assert 'HINT: Set ASGI_APPLICATION = "mysite.asgi.application"' in done.stderr


def test_manage_check_on_the_project_settings(tmp_path):
    done = _manage_check(tmp_path, "from project.settings import *\n")
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "System check identified no issues (0 silenced).\n")
