"""``manage.py process_publish_queue``: the publish-queue processor as a process of its own (docs/sessions.md)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from betaassi_django.publishing import notify
from betaassi_django.publishing.follower import Follower
from betaassi_django.publishing.processor import Processor, default_holder

#: The line per event, as the example project's LOGGING writes it.
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextlib.contextmanager
def console_logging(verbosity: int) -> Iterator[None]:
    """A line per applied event on stderr even in a project without LOGGING: when nothing would show the
    ``betaassi_django`` logger's records, a console handler does for the run (-v 0: only warnings and errors,
    -v 1: each event, -v 2 and more: the leases too). A project's own handlers are left alone."""
    logger = logging.getLogger("betaassi_django")
    if logger.hasHandlers():
        yield
        return
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    handler.setLevel(level)
    previous = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class Command(BaseCommand):
    help = ("Apply pending publish-queue events of every assistant (or one), in order, keeping each "
            "assistant's high water mark. With --once, drain what is pending and exit.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain the pending events, then exit (1 when an "
                                                                "assistant failed: it is recorded and retried later).")
        parser.add_argument("--assistant", action="append", dest="assistants", metavar="ASST_ID",
                            help="Only this assistant (repeatable).")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between polls (default 1).")
        parser.add_argument("--holder", help="A stable name for this processor, so that after a crash it takes "
                                             "its own leases back at once (default: host:pid:random).")
        parser.add_argument("--lease-seconds", type=float, default=30.0,
                            help="How long a lease lasts without renewal (default 30).")

    def handle(self, *args, verbosity: int = 1, **options) -> None:
        with console_logging(verbosity):
            self.process(**options)

    def process(self, *, once: bool, assistants: list[str] | None, interval: float, holder: str | None,
                lease_seconds: float, **options) -> None:
        """Drain once, or poll until SIGTERM / SIGINT."""
        holder = holder or default_holder()
        # The assistants another deployment owns are followed, not applied: docs/deployment.md.
        follower = Follower(holder, lease_seconds=lease_seconds)
        processor = Processor(assistant_ids=assistants, holder=holder, lease_seconds=lease_seconds,
                              follower=follower)
        if once:
            try:
                seen = processor.run_once()
            finally:
                follower.close()
            self.stdout.write(f"processed {seen} event(s)")
            for assistant_id, error in processor.failed.items():
                self.stderr.write(f"assistant {assistant_id} failed: {error}")
            if processor.failed:  # recorded and backed off; the others were processed
                raise CommandError(f"{len(processor.failed)} assistant(s) failed; see above")
            return
        if apps.is_installed("betaassi_django.assistants_api"):
            from betaassi_django.assistants_api.engine import engine

            engine.start()  # this process ends runs whose process died, as servers do (assistants_api.recovery)
        stop = threading.Event()

        def shutdown(*_) -> None:
            stop.set()
            notify.local_wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, shutdown)
        self.stdout.write(f"processing publish queues as {processor.holder} (every {interval}s; Ctrl-C stops)")
        try:
            processor.serve(interval, stop)
        finally:
            follower.close()
        self.stdout.write("stopped")
