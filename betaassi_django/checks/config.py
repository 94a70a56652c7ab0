"""Configuration checks (``Tags.compatibility``): what a project must add for the pages, chat and processor to work.

Each message says what is wrong and its hint names the setting that fixes it; the ids and messages are listed in
docs/configuration.md ("System checks"). They run with ``manage.py check``, ``migrate`` and ``runserver``.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from betaassi_django import conf

#: Seconds channels-redis blocks on an idle channel (``brpop_timeout``): a read timeout must exceed it.
REDIS_BLOCK_SECONDS = 5


def _project() -> str:
    """The project package (``mysite`` for ``mysite.settings``), to write hints the user can paste."""
    module = getattr(settings, "SETTINGS_MODULE", None) or os.environ.get("DJANGO_SETTINGS_MODULE") or "mysite.settings"
    return module.rpartition(".")[0] or "mysite"


def check_channel_layer(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """E010: WebSockets join groups through the default channel layer; without one every connect fails."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    hint = ('Add CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}} for one '
            'process, or a Redis layer for several: {"default": {"BACKEND": '
            '"betaassi_django.layers.RedisChannelLayer", "CONFIG": {"hosts": [{"address": REDIS_URL, '
            '"socket_timeout": 15}]}}} (channels-redis\'s layer, which also waits out a Redis restart).')
    if DEFAULT_CHANNEL_LAYER not in getattr(settings, "CHANNEL_LAYERS", {}):
        return [checks.Error("No channel layer: CHANNEL_LAYERS has no 'default' layer, so every chat WebSocket "
                             "fails to connect and applied events reach no page.", hint=hint, id="betaassi.E010")]
    try:
        channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)  # a fresh instance: builds, connects to nothing
    except Exception as exc:  # whatever the backend raises is the message
        return [checks.Error(f"The default channel layer cannot be built: {exc.__class__.__name__}: {exc}",
                             hint=f"Fix CHANNEL_LAYERS['default']. {hint}", id="betaassi.E010")]
    return []


def check_embedded_backend(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """E011: the embedded backend is the /v1 API of betaassi_django.assistants_api, in this project."""
    if conf.get().backend != "embedded" or apps.is_installed("betaassi_django.assistants_api"):
        return []
    return [checks.Error(
        "BETAASSI_BACKEND is 'embedded' (its default) but 'betaassi_django.assistants_api' is not in "
        "INSTALLED_APPS, so there is no backend to store assistants, threads and runs in.",
        hint="Add 'betaassi_django.assistants_api' to INSTALLED_APPS (before 'betaassi_django') and "
        'path("v1/", include("betaassi_django.assistants_api.urls")) to urls.py, or set '
        "BETAASSI_BACKEND = 'remote' with OPENAI_BASE_URL and OPENAI_API_KEY.",
        id="betaassi.E011")]


def check_asgi_application(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """E012: the chat needs an ASGI server; daphne's runserver finds the application through this setting."""
    if getattr(settings, "ASGI_APPLICATION", None):
        return []
    return [checks.Error(
        "ASGI_APPLICATION is not set: runserver (with daphne installed) cannot serve WebSockets.",
        hint=f'Set ASGI_APPLICATION = "{_project()}.asgi.application", with application = '
        "betaassi_django.asgi.get_asgi_application() in that asgi.py.",
        id="betaassi.E012")]


def check_processor(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """W010: without a publish-queue processor no session is ever applied; say which one runs."""
    name = "BETAASSI_IN_SERVER_PROCESSOR"
    if hasattr(settings, name) or name in os.environ:
        return []
    return [checks.Warning(
        f"{name} is set neither in settings nor in the environment, so no publish-queue processor is "
        "configured: unless `manage.py process_publish_queue` runs, started sessions are never applied.",
        hint=f"Set {name} = True to run the processor inside the web process (one daphne process, "
        f"development), or run `python manage.py process_publish_queue` beside daphne and set {name} = False "
        "(production, with Redis).",
        id="betaassi.W010")]


def _read_timeout(host: dict) -> float | None:
    """The socket_timeout a channels-redis host entry gives redis-py (keyword or ``?socket_timeout=`` in the URL)."""
    if host.get("socket_timeout") is not None:
        return float(host["socket_timeout"])
    query = parse_qs(urlsplit(str(host.get("address", ""))).query)
    return float(query["socket_timeout"][0]) if "socket_timeout" in query else None


def check_redis_timeouts(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """W011: redis-py 8 times reads out after 5 s, exactly as long as channels-redis blocks on an idle channel."""
    try:
        from channels_redis.core import RedisChannelLayer
        from channels_redis.pubsub import RedisPubSubChannelLayer
        from channels_redis.utils import decode_hosts
    except ImportError:  # no channels-redis, no Redis layer
        return []
    warnings = []
    for alias, layer in getattr(settings, "CHANNEL_LAYERS", {}).items():
        try:
            backend = import_string(layer["BACKEND"])
            if not issubclass(backend, (RedisChannelLayer, RedisPubSubChannelLayer)):
                continue
            hosts = decode_hosts(layer.get("CONFIG", {}).get("hosts"))
        except Exception:  # a layer that cannot be built is E010's to report
            continue
        for host in hosts:
            timeout = _read_timeout(host)
            if timeout is None or timeout <= REDIS_BLOCK_SECONDS:
                warnings.append(checks.Warning(
                    f"CHANNEL_LAYERS[{alias!r}]: Redis host {host.get('address', host.get('host'))!r} has "
                    f"socket_timeout={timeout} (redis-py 8 defaults to 5 s), no more than the {REDIS_BLOCK_SECONDS} s "
                    "channels-redis blocks on an idle channel: idle WebSockets close with 1011.",
                    hint='Give each host as a dict with a longer read timeout: {"address": REDIS_URL, '
                    '"socket_timeout": 15, "socket_connect_timeout": 5}.',
                    id="betaassi.W011"))
    return warnings


def check_sqlite_locking(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """W012: the run engine and async views write from several threads; SQLite's defaults fail them at once."""
    database = settings.DATABASES.get("default", {})
    if database.get("ENGINE") != "django.db.backends.sqlite3":
        return []
    options = database.get("OPTIONS", {})
    if str(options.get("transaction_mode", "")).upper() == "IMMEDIATE" and "timeout" in options:
        return []
    return [checks.Warning(
        "The default database is SQLite without \"transaction_mode\": \"IMMEDIATE\" and a \"timeout\": "
        "concurrent writers (runs, sessions, the processor) get \"database is locked\".",
        hint='Add DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30, '
        '"init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL"}.',
        id="betaassi.W012")]


def check_deployment_name(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """W013: a remote backend is another deployment's (or shared): two processors both named "default" would
    both apply the same queues."""
    settings_ = conf.get()
    if settings_.backend != "remote" or settings_.deployment != "default":
        return []
    return [checks.Warning(
        "BETAASSI_BACKEND is 'remote' but BETAASSI_DEPLOYMENT is left 'default': if the backend's host or another "
        "project on it also runs a processor as 'default', both apply the same assistants' events, and neither "
        "mirror learns what the other applied.",
        hint="Give this project a name of its own, distinct from every deployment sharing the backend: "
        "BETAASSI_DEPLOYMENT = 'shop' (docs/deployment.md, \"Several deployments on one backend\").",
        id="betaassi.W013")]


CONFIGURATION_CHECKS = (check_channel_layer, check_embedded_backend, check_asgi_application, check_processor,
                        check_redis_timeouts, check_sqlite_locking, check_deployment_name)
