"""The project's whole ASGI application in one call, optionally with the publish-queue processor inside.

A project's asgi.py sets ``DJANGO_SETTINGS_MODULE`` and calls ``get_asgi_application()`` (docs/own-project.md).
Without Redis the in-memory channel layer cannot reach another process, so
``make run`` runs the processor in the server process (``BETAASSI_IN_SERVER_PROCESSOR``):
publishers in the server wake it at once, and its broadcasts (``session.updated``
pushes) reach the server's WebSocket consumers on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from django.apps import apps

from betaassi_django import conf
from betaassi_django.publishing import notify

logger = logging.getLogger("betaassi_django.publishing")

#: Seconds between polls of the in-server processor, for events published by other processes.
IN_SERVER_INTERVAL = 0.5

_started = threading.Lock()
_stop = threading.Event()
_thread: threading.Thread | None = None


def start_processor() -> None:
    """Start the in-server processor thread, once per process."""
    global _thread
    with _started:
        if _thread is not None:
            return
        from betaassi_django.publishing.follower import Follower
        from betaassi_django.publishing.processor import Processor, default_holder

        holder = default_holder()
        processor = Processor(holder=holder, follower=Follower(holder))  # others' assistants: followed
        _thread = threading.Thread(target=processor.serve, args=(IN_SERVER_INTERVAL, _stop),
                                   name="betaassi-processor", daemon=True)
        _thread.start()
        logger.info("publish-queue processor running in the server as %s", processor.holder)


class WithProcessor:
    """Wraps an ASGI application: starts the processor and hands it the server's event loop; starts the run
    engine's heartbeat and sweep at the first connection, so a server ends the runs of dead processes."""

    def __init__(self, app) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        if conf.get().in_server_processor:
            start_processor()

    async def __call__(self, scope, receive, send):
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            if apps.is_installed("betaassi_django.assistants_api"):
                from betaassi_django.assistants_api.engine import engine

                engine.start()
            self.loop = loop
            notify.serve_on(loop)
        return await self.app(scope, receive, send)


def get_asgi_application():
    """HTTP through Django (static files too when ``SERVE_STATIC``, default ``DEBUG``), WebSockets through
    Channels with the session login, all in ``WithProcessor``.

    Django is set up first (``django.core.asgi.get_asgi_application``), so an asgi.py may import this module
    before anything else; the routing, which imports models, is imported after.
    """
    from django.core.asgi import get_asgi_application as django_asgi_application

    http = django_asgi_application()

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.conf import settings

    from betaassi_django.routing import websocket_urlpatterns

    # daphne serves the admin's and pages' static files in development (as runserver would) and under the test
    # servers; a deployment serves them from STATIC_ROOT (collectstatic) with its web server (docs/deployment.md).
    if getattr(settings, "SERVE_STATIC", settings.DEBUG):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        http = ASGIStaticFilesHandler(http)
    websocket = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
    return WithProcessor(ProtocolTypeRouter({"http": http, "websocket": websocket}))
