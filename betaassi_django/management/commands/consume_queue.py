"""``manage.py consume_queue``: a durable consumer of publish queues running a handler per event (docs/consumers.md).

Each event is handed to the handler; one that raises is retried with back-off, and after ``--max-attempts``
recorded as a ``ConsumerFailure`` (with an ERROR line) and passed, so one poison event never stops the consumer.
A body that is not a valid event is recorded at once, without calling the handler. SIGTERM / SIGINT stop it
after the current event, committing what was handled.
"""

from __future__ import annotations

import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from betaassi_django.publishing.consumer import Consumer, logger
from betaassi_django.publishing.models import ConsumerFailure
from betaassi_django.publishing.positions import STARTS
from betaassi_django.publishing.queue_event import QueueEvent

from .process_publish_queue import console_logging


class Command(BaseCommand):
    help = ("Run a named, durable consumer of the publish queues: a handler per event, in order, at least once; "
            "failing events are retried, then recorded as ConsumerFailure rows. With --once, handle what is "
            "pending and exit.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The consumer's name (its position is kept under it).")
        parser.add_argument("--handler", required=True, metavar="DOTTED.PATH",
                            help="A function taking one QueueEvent.")
        parser.add_argument("--assistant", action="append", dest="assistants", metavar="ASST_ID",
                            help="Only this assistant (repeatable; default: every assistant with a queue).")
        parser.add_argument("--class", dest="assistant_class", metavar="APP_LABEL.MODEL",
                            help="Every assistant of this model.")
        parser.add_argument("--type", action="append", dest="types", metavar="PATTERN",
                            help="Only events whose type matches this fnmatch pattern (repeatable).")
        parser.add_argument("--max-attempts", type=int, default=5, help="Tries per event before it is recorded "
                                                                        "as failed (default 5).")
        parser.add_argument("--retry-delay", type=float, default=0.5,
                            help="Seconds before the first retry, doubling each time (default 0.5).")
        parser.add_argument("--start", choices=STARTS, default="oldest",
                            help="Where a new consumer starts: the oldest event or after the latest.")
        parser.add_argument("--applied-only", action="store_true",
                            help="Only events the processor has processed, each with its verdict (event.status).")
        parser.add_argument("--once", action="store_true", help="Handle the pending events, then exit.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between polls (default 1).")
        parser.add_argument("--holder", help="A stable name for this process (default: host:pid:random).")
        parser.add_argument("--lease-seconds", type=float, default=30.0,
                            help="How long a lease lasts without renewal (default 30).")

    def handle(self, *args, verbosity: int = 1, **options) -> None:
        if options["max_attempts"] < 1:
            raise CommandError("--max-attempts must be at least 1")
        try:
            self.handler = import_string(options["handler"])
        except ImportError as exc:
            raise CommandError(f"cannot import the handler {options['handler']}: {exc}") from None
        self.stop = threading.Event()
        with console_logging(verbosity):
            self.consume(**options)

    def consume(self, *, name: str, assistants: list[str] | None, assistant_class: str | None,
                types: list[str] | None, max_attempts: int, retry_delay: float, start: str, once: bool,
                interval: float, holder: str | None, lease_seconds: float, applied_only: bool, **options) -> None:
        try:
            consumer = Consumer(name, assistant_ids=assistants, assistant_class=assistant_class, types=types,
                                start=start, holder=holder, lease_seconds=lease_seconds, poll_interval=interval,
                                applied_only=applied_only)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.max_attempts, self.retry_delay = max_attempts, retry_delay
        self.handled = self.failed = 0
        if not once:
            def shutdown(*_) -> None:
                self.stop.set()
                consumer.interrupt()  # out of the consumer's wait

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, shutdown)
            self.stdout.write(f"consuming {name} as {consumer.holder} (every {interval}s; Ctrl-C stops)")
        try:
            while not self.stop.is_set():
                try:
                    self.run(consumer, timeout=0 if once else interval)  # back here each idle interval
                except Exception as exc:  # the backend is down, a registration timed out: log it, poll again
                    if once:
                        raise CommandError(f"consumer {name} failed: {type(exc).__name__}: {exc}") from None
                    logger.exception("consumer %s failed; retrying in %ss", name, interval)
                    self.stop.wait(interval)
                if once:
                    break
        finally:
            consumer.close()
        self.stdout.write(f"handled {self.handled} event(s), {self.failed} recorded as failed" if once else "stopped")

    def run(self, consumer: Consumer, timeout: float | None) -> None:
        """Handle events until stopped (or, with a timeout, until none is pending); commit what was handled."""
        for event in consumer.events(timeout=timeout):
            if self.stop.is_set() or not self.settle(consumer, event):
                consumer.requeue(event)  # not handled: it comes again
                break
        consumer.commit()

    def settle(self, consumer: Consumer, event: QueueEvent) -> bool:
        """Handle one event with retries, or record it as failed; False when stopped before it was settled."""
        if event.op is None:
            self.record(consumer, event, 0, f"not a valid event: {event.rejected}")
            return True
        for attempt in range(1, self.max_attempts + 1):
            try:
                self.handler(event)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:1000]
                if attempt == self.max_attempts:
                    self.record(consumer, event, attempt, error)
                    return True
                delay = self.retry_delay * 2 ** (attempt - 1)
                logger.warning("consumer=%s event=%s assistant=%s type=%s attempt %d failed (%s); retrying in "
                               "%.1fs", consumer.name, event.id, event.assistant_id, event.type, attempt, error, delay)
                if self.stop.wait(delay):
                    return False
            else:
                self.handled += 1
                logger.info("consumer=%s event=%s assistant=%s type=%s status=handled attempts=%d holder=%s t=%.6f",
                            consumer.name, event.id, event.assistant_id, event.type, attempt, consumer.holder,
                            time.time())
                return True
        return True

    def record(self, consumer: Consumer, event: QueueEvent, attempts: int, error: str) -> None:
        """A ``ConsumerFailure`` row and an ERROR line; the event is passed."""
        self.failed += 1
        ConsumerFailure.objects.update_or_create(consumer=consumer.name, event_id=event.id, defaults={
            "assistant_id": event.assistant_id, "event_type": event.type or "", "attempts": attempts,
            "error": error})
        logger.error("consumer=%s event=%s assistant=%s type=%s status=failed attempts=%d error=%s", consumer.name,
                     event.id, event.assistant_id, event.type or "-", attempts, error)
