import signal
import threading

from django.core.management.base import BaseCommand

from betaassi_django.publishing.processor import Processor


class Command(BaseCommand):
    help = ("Apply pending publish-queue events of every assistant (or one), in order, keeping each "
            "assistant's high water mark. With --once, drain what is pending and exit.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain the pending events, then exit 0.")
        parser.add_argument("--assistant", action="append", dest="assistants", metavar="ASST_ID",
                            help="Only this assistant (repeatable).")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between polls (default 1).")

    def handle(self, *args, once: bool, assistants: list[str] | None, interval: float, **options) -> None:
        processor = Processor(assistant_ids=assistants)
        if once:
            seen = processor.run_once()
            self.stdout.write(f"processed {seen} event(s)")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(f"processing publish queues as {processor.holder} (every {interval}s; Ctrl-C stops)")
        while not stop.is_set():
            processor.run_once()
            stop.wait(interval)
        self.stdout.write("stopped")
