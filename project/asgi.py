"""ASGI entry point of the example project: the same three lines a project of your own uses."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
from betaassi_django.asgi import get_asgi_application

application = get_asgi_application()
