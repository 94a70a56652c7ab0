"""ASGI helpers: the project's application, optionally with the publish-queue processor inside.

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
from betaassi_django.publishing import signals

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
        from betaassi_django.publishing.processor import Processor

        processor = Processor()
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
            signals.serve_on(loop)
        return await self.app(scope, receive, send)
