"""Ingest the vector store files that wait for it, in this process (docs/knowledge.md, "Ingestion").

Serving processes ingest by themselves (their worker thread); this command is for an operator: finish what waits
now (a deploy that stopped every server, a backlog), or, with ``--watch``, keep a process for ingestion alone.
The files are taken with the same leases as the worker's, so it runs safely beside the servers.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from betaassi_django.assistants_api.knowledge import ingestion


class Command(BaseCommand):
    help = ("Ingest the vector store files waiting for it (in_progress, unclaimed or their lease run out): a line "
            "per file, then a total. --watch keeps looking, every half lease.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--watch", action="store_true", help="Keep running, taking files as they come.")

    def handle(self, *args, watch: bool = False, **options) -> None:
        try:
            while True:
                taken = self._drain()
                if not watch:
                    self.stdout.write(f"{taken} file(s) ingested")
                    return
                time.sleep(ingestion.lease_seconds() / 2)
        except KeyboardInterrupt:
            return

    def _drain(self) -> int:
        taken = 0
        while (claimed := ingestion.claim()) is not None:
            vs_file, lease = claimed
            status = ingestion.ingest(vs_file, lease)
            vs_file.refresh_from_db(fields=["last_error"])
            error = vs_file.last_error or {}
            detail = f" ({error.get('code')}: {error.get('message')})" if status == "failed" else ""
            self.stdout.write(f"{vs_file.file_id} in {vs_file.vector_store.id}: {status}{detail}")
            taken += 1
            if status == "retry":
                break
        return taken
