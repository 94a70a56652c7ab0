"""Production settings: the development settings, with everything secret or site-specific from the environment.

Run with DJANGO_SETTINGS_MODULE=mysite.production (daphne, process_publish_queue and every manage.py command).
"""

import environ

from .settings import *  # noqa: F403

env = environ.Env()

SECRET_KEY = env("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
# The scheme and host the browsers use, e.g. https://chat.example.com (the login and start forms post to it).
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

# PostgreSQL, e.g. DATABASE_URL=postgres://user:password@db.example.com:5432/mysite. Every request of an ASGI
# server runs in a thread of its own: close connections after each one and take them from a bounded pool.
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 20, "timeout": 30}}

# Redis carries the WebSockets' frames between daphne processes and wakes the processor, e.g.
# REDIS_URL=redis://redis.example.com:6379/0. socket_timeout must outlast the layer's 5 s blocking read
# (redis-py 8 defaults to 5 s and would close idle WebSockets); this layer also survives a Redis restart.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "betaassi_django.layers.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": env("REDIS_URL"), "socket_timeout": 15, "socket_connect_timeout": 5}],
            "capacity": 1000,
        },
    }
}

# Published session changes are applied by `python manage.py process_publish_queue`, run beside daphne.
BETAASSI_IN_SERVER_PROCESSOR = False

# HTTPS behind a proxy that terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
