"""The test settings with ``betaassi_django`` ahead of ``django.contrib.admin``, so the app's
``admin/base_site.html`` (the favicon) is the admin's (docs/admin.md#installing)."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

OURS = ["betaassi_django.assistants_api", "betaassi_django"]
INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in OURS]
INSTALLED_APPS[INSTALLED_APPS.index("django.contrib.admin"):0] = OURS
