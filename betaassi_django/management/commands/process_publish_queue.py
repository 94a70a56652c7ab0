import signal
import threading

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from betaassi_django.publishing import signals
from betaassi_django.publishing.processor import Processor


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

    def handle(self, *args, once: bool, assistants: list[str] | None, interval: float, holder: str | None,
               lease_seconds: float, **options) -> None:
        processor = Processor(assistant_ids=assistants, holder=holder, lease_seconds=lease_seconds)
        if once:
            seen = processor.run_once()
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
            signals.local_wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, shutdown)
        self.stdout.write(f"processing publish queues as {processor.holder} (every {interval}s; Ctrl-C stops)")
        processor.serve(interval, stop)
        self.stdout.write("stopped")
