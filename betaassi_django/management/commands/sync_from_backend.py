from django.core.management.base import BaseCommand

from betaassi_django.sync import sync_from_backend


class Command(BaseCommand):
    help = (
        "Re-read backend objects into the local mirrors: every assistant (routed to its model by "
        "betaassi_type) and every known thread, message and run. The backend wins."
    )

    def handle(self, *args, **options) -> None:
        counts = sync_from_backend()
        for what, count in sorted(counts.items()):
            self.stdout.write(f"{what}: {count}")
