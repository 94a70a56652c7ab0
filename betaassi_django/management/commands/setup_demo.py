import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from betaassi_django.models import Assistant

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = ("Create, when none exist, a demo user (printing its random password once) and a demo assistant, "
            "so a newcomer can log in and chat at once.")

    def handle(self, *args, **options) -> None:
        users = get_user_model()
        if not users.objects.filter(username=DEMO_USERNAME).exists():
            password = secrets.token_urlsafe(12)
            users.objects.create_user(DEMO_USERNAME, password=password)
            self.stdout.write(f"  Demo login (shown once):  user {DEMO_USERNAME}  password {password}")
        else:
            self.stdout.write(f"  Demo login: user {DEMO_USERNAME} (its password was shown when it was created; "
                              f"change it with: manage.py changepassword {DEMO_USERNAME})")
        if not Assistant.objects.exists():
            assistant = Assistant.objects.create(
                name="Demo assistant", instructions="You are a friendly demo assistant.", model="gpt-4o-mini")
            self.stdout.write(f"  Demo assistant: {assistant.id}")
