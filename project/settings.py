"""Settings of the example project that serves betaassi-django.

Everything a deployment changes comes from the environment (or a ``.env`` file)
through django-environ; docs/configuration.md lists the variables, docs/deployment.md
what production sets.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    # Off unless asked for: `make run` sets DEBUG=true for the local development server.
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost", "[::1]"]),
    DATABASE_URL=(str, "sqlite:///" + str(BASE_DIR / "db.sqlite3")),
    REDIS_URL=(str, ""),
)
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env("DEBUG")
#: The key ``make run`` uses in development; never accepted with DEBUG off.
DEVELOPMENT_SECRET_KEY = "django-insecure-betaassi-dev-only-change-me"
SECRET_KEY = env("SECRET_KEY", default="") or (DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY.startswith("django-insecure")):
    # Sessions, CSRF tokens and password-reset links are signed with it: a known key forges all of them.
    raise ImproperlyConfigured(
        "SECRET_KEY is missing or is a development key, and DEBUG is off. Set SECRET_KEY in the environment "
        "(or .env) to a long random value, for example the output of: "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'. "
        "For local development only, set DEBUG=true instead (make run does)."
    )
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.admin: the app's admin/base_site.html (favicon, the admin's styles) is the admin's.
    "betaassi_django.assistants_api",
    "betaassi_django",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL")}
# Under ASGI each request runs in a thread of its own, so connections kept per thread would pile up
# (past PostgreSQL's max_connections under load): close them after each request, and on PostgreSQL
# take them from a pool that bounds their number and makes taking one cheap.
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2, "max_size": env.int("DATABASE_POOL_SIZE", default=20), "timeout": 30}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (the run engine, async views) write at once: wait for the
    # lock instead of failing, and take it up front so upgrades cannot deadlock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
        }
    )
    # A file, not memory: the run engine's thread must see what tests commit.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}


def redis_channel_layers(url: str) -> dict:
    """The channel layer over Redis at ``url`` (also what the tests that restart Redis use)."""
    # channels-redis receives with a blocking BZPOPMIN of 5 s (RedisChannelLayer.brpop_timeout) on an idle
    # channel. redis-py 8 made socket_timeout default to 5 s (it was None), so the client gave up reading at
    # the moment Redis answered: "Timeout reading from ...", every idle WebSocket closed with 1011, and the
    # processor's wake-up listener died. The connections' timeouts are therefore set here, not left to
    # redis-py's defaults: a read may take the 5 s block plus a margin (a dead Redis is still noticed within
    # 15 s, and at once when it closes the connection); connecting fails fast. redis-py's own TCP keepalive
    # (on by default since 8) stays on. The layer is channels-redis's with one addition: its receives wait out
    # a Redis restart and then join their groups again (a restarted Redis has forgotten them), so WebSockets
    # stay open and keep receiving (betaassi_django/layers.py).
    return {
        "default": {
            "BACKEND": "betaassi_django.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": url, "socket_timeout": 15, "socket_connect_timeout": 5}],
                # Room for a burst of frames per connection before the layer drops any.
                "capacity": 1000,
            },
        }
    }


if env("REDIS_URL"):
    CHANNEL_LAYERS = redis_channel_layers(env("REDIS_URL"))
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded files (the embedded API's /v1/files) go to the default storage: local files under MEDIA_ROOT here; a
# deployment may set STORAGES["default"] to any django-storages backend instead (docs/knowledge.md). Never served
# as static files: the API streams them to callers with a key.
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / "media"))
# daphne serves the static files itself (project/asgi.py) in development, and wherever this is set: the
# test servers (betaassi_django.testing.LiveServer) run with DEBUG off and still need the admin's CSS and JS.
SERVE_STATIC = env.bool("SERVE_STATIC", default=DEBUG)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "betaassi_django": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO"), "propagate": False},
        # The in-process API client would log every call it makes at INFO.
        "httpx2": {"level": "WARNING"},
    },
}

# The publish-queue processor applies started sessions (docs/sessions.md). True runs it inside the daphne process
# (one process, in-memory channel layer: `make run` without REDIS_URL); False means `manage.py
# process_publish_queue` runs beside daphne (production, with Redis). Read from the environment, so that
# `make run` and the test servers choose; set either way, so that check W010 is satisfied.
BETAASSI_IN_SERVER_PROCESSOR = env.bool("BETAASSI_IN_SERVER_PROCESSOR", default=False)

# betaassi-django reads its other settings (BETAASSI_*, OPENAI_*) from the environment in betaassi_django.conf
# when they are not set here (docs/configuration.md).
