"""``manage.py prune_publish_queue``: remove the publish-queue events everyone has passed (docs/configuration.md)."""

from __future__ import annotations

import openai
from django.core.management.base import BaseCommand, CommandError

from betaassi_django import conf
from betaassi_django.client import get_client
from betaassi_django.publishing import ownership, retention
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY


class Command(BaseCommand):
    help = ("Delete the oldest publish-queue events that the processor and every registered consumer have passed, "
            "keeping the newest --keep. Every assistant this deployment owns, or the ones named.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--assistant", action="append", dest="assistants", metavar="ASST_ID",
                            help="Only this assistant (repeatable; owned by any deployment).")
        parser.add_argument("--keep", type=int, default=None,
                            help="Newest events always kept (default: BETAASSI_QUEUE_KEEP).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be removed; delete nothing.")

    def handle(self, *args, assistants: list[str] | None, keep: int | None, dry_run: bool, **options) -> None:
        keep = conf.get().queue_keep if keep is None else keep
        if keep < 0:
            raise CommandError(f"--keep {keep}: must not be negative")
        api = get_client()
        if assistants:
            try:
                targets = [api.beta.assistants.retrieve(assistant_id) for assistant_id in assistants]
            except openai.NotFoundError as exc:
                raise CommandError(f"no such assistant: {exc}") from None
        else:
            targets = [a for a in api.beta.assistants.list(limit=100, order="asc")
                       if (a.metadata or {}).get(PUBLISH_KEY) and (a.metadata or {}).get(REGISTRY_KEY)
                       and ownership.owned_here(a.metadata)]
        total = 0
        verb = "would remove" if dry_run else "removed"
        for assistant in targets:
            try:
                removed = retention.prune(api, assistant, keep=keep, dry_run=dry_run)
            except ValueError as exc:  # no publish queue
                raise CommandError(str(exc)) from None
            total += removed
            self.stdout.write(f"assistant {assistant.id}: {verb} {removed} event(s)")
        self.stdout.write(f"{verb} {total} event(s) of {len(targets)} queue(s)")
