"""The project's settings plus a test app whose models subclass the entity bases."""

import atexit
import os
import secrets
import shutil
import tempfile

# DEBUG is off in tests, as deployed, so the project refuses to start without a real key: one per test run,
# inherited by the servers and processors the tests start (a LiveServer keeps one it is given).
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
# Uploaded files go to a directory of this test run, never into the checkout; the servers the tests start inherit
# it (project/settings.py reads MEDIA_ROOT). Removed when the run that made it exits.
if "MEDIA_ROOT" not in os.environ:
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="betaassi-media-")
    atexit.register(shutil.rmtree, os.environ["MEDIA_ROOT"], ignore_errors=True)

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One test database file per test run, so that two runs in one checkout never share (and wipe) it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")}

# The registry and queue tests hold thousands of sessions of one owner: the session counts are off here, and
# tests/test_quotas.py sets the limits it tests (the product's defaults are 20 per assistant, 100 in all).
BETAASSI_MAX_SESSIONS_PER_USER = 0
BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT = 0

# Users are made by the hundred in the tests: see tests/hashers.py.
PASSWORD_HASHERS = ["tests.hashers.QuickPBKDF2PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The flush between transactional tests deletes rows rather than truncating tables: tests/postgresql/base.py.
    DATABASES["default"]["ENGINE"] = "tests.postgresql"
