from django.core.management.base import BaseCommand, CommandError

from betaassi_django.assistants_api.models import ApiKey, Assistant


class Command(BaseCommand):
    help = ("Create a key for the embedded /v1 API. The key is printed once, as the last line; only its hash is kept. "
            "Without options it is full access.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'ci' or 'alice-laptop'.")
        parser.add_argument("--read-only", action="store_true", help="Allow GET requests only (retrieve and list).")
        parser.add_argument("--assistant", action="append", default=[], metavar="ID", dest="assistants",
                            help="Limit the key to this assistant and its threads (repeat for several).")

    def handle(self, *args, name: str, read_only: bool, assistants: list[str], **options) -> None:
        unknown = sorted(set(assistants) - set(Assistant.objects.filter(id__in=assistants).values_list("id",
                                                                                                        flat=True)))
        if unknown:
            raise CommandError(f"No assistant found with id {', '.join(unknown)}: no key was created.")
        key, raw = ApiKey.issue(name, read_only=read_only, assistant_ids=assistants)
        self.stderr.write(f"Created API key {key.name!r} ({key.prefix}…), scope: {key.scope_label}. "
                          "Store it now: it is not shown again.")
        self.stdout.write(raw)
