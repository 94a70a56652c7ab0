"""``manage.py sync_from_backend``: re-read the backend into the mirrors, showing progress and a summary."""

from __future__ import annotations

from collections import Counter

from django.core.management.base import BaseCommand, OutputWrapper

from betaassi_django.sync import Progress, remote_models, sync_from_backend


class ShownProgress(Progress):
    """A line per ``every`` objects of a kind and one when it is done (stderr), and the tally for the summary."""

    def __init__(self, out: OutputWrapper | None, every: int) -> None:
        self.out = out
        self.every = every
        self.done: Counter = Counter()
        self.totals: dict[str, int | None] = {}
        self.outcomes: Counter = Counter()  # (model label, outcome) -> objects

    def _line(self, kind: str, suffix: str = "") -> str:
        total = self.totals[kind]
        return f"{kind}: {self.done[kind]}" + (f" of {total}" if total is not None else "") + suffix

    def started(self, kind: str, total: int | None) -> None:
        self.totals[kind] = total

    def object(self, kind: str, label: str, outcome: str) -> None:
        self.done[kind] += 1
        self.outcomes[label, outcome] += 1
        if self.out and self.done[kind] % self.every == 0:
            self.out.write(self._line(kind))

    def finished(self, kind: str) -> None:
        if self.out:
            self.out.write(self._line(kind, ", done"))


class Command(BaseCommand):
    help = (
        "Re-read backend objects into the local mirrors: every assistant (routed to its model by "
        "betaassi_type) and every known thread, message and run. The backend wins. Progress goes to stderr, "
        "the summary per model to stdout."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--every", type=int, default=100, metavar="N",
                            help="A progress line every N objects of a kind (default 100), and one at its end.")

    def handle(self, *args, verbosity: int = 1, every: int = 100, **options) -> None:
        progress = ShownProgress(self.stderr if verbosity >= 1 else None, max(every, 1))
        sync_from_backend(progress)
        if verbosity < 1:
            return
        for label in sorted(model.type_label() for model in remote_models()):
            created, updated, removed = (progress.outcomes[label, o] for o in ("created", "updated", "removed"))
            self.stdout.write(f"{label}: {created} created, {updated} updated, {removed} removed")
        if skipped := progress.outcomes["other types", "skipped"]:
            self.stdout.write(f"assistants of other types (no model here): {skipped} skipped")
