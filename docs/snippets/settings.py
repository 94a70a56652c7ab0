# betaassi-django: appended to the settings.py that `django-admin startproject mysite` wrote
# (INSTALLED_APPS, DATABASES and BASE_DIR are defined above it).
# ruff: noqa: F821

INSTALLED_APPS = [
    "daphne",  # first, so that `runserver` serves the ASGI application
    "betaassi_django.assistants_api",  # the embedded /v1 Assistants API (the default backend)
    "betaassi_django",  # before django.contrib.admin: its admin/base_site.html is the admin's (docs/admin.md)
    *INSTALLED_APPS,
    "channels",
]

# daphne loads the application of asgi.py: Django's views, the chat WebSockets and the processor.
ASGI_APPLICATION = "mysite.asgi.application"

# The chat pages' WebSockets and the processor's pushes go through a channel layer. In memory is enough
# for one development process; production uses Redis (production.py).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Apply published session changes in the web process itself: nothing else to start in development.
BETAASSI_IN_SERVER_PROCESSOR = True

# Several threads write to SQLite at once (the run engine, the processor, async views): wait for the
# lock instead of failing with "database is locked", and take it up front.
DATABASES["default"]["OPTIONS"] = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
}

# Where `manage.py collectstatic` gathers the admin's and the pages' files for your web server.
STATIC_ROOT = BASE_DIR / "staticfiles"

# Where files uploaded to the embedded API (/v1/files) are kept, through the default storage: set
# STORAGES["default"] to a django-storages backend to keep them elsewhere (docs/knowledge.md).
MEDIA_ROOT = BASE_DIR / "media"
