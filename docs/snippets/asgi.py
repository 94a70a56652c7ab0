import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from betaassi_django.asgi import get_asgi_application

application = get_asgi_application()
