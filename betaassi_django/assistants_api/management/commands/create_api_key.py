from django.core.management.base import BaseCommand

from betaassi_django.assistants_api.models import ApiKey


class Command(BaseCommand):
    help = "Create a key for the embedded /v1 API. The key is printed once, as the last line; only its hash is kept."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'ci' or 'alice-laptop'.")

    def handle(self, *args, name: str, **options) -> None:
        key, raw = ApiKey.issue(name)
        self.stderr.write(f"Created API key {key.name!r} ({key.prefix}…). Store it now: it is not shown again.")
        self.stdout.write(raw)
