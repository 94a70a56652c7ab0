"""The project's settings refuse to start in production without a real SECRET_KEY; DEBUG is off by default."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

MESSAGE = (
    "django.core.exceptions.ImproperlyConfigured: SECRET_KEY is missing or is a development key, and DEBUG is off. "
    "Set SECRET_KEY in the environment (or .env) to a long random value, for example the output of: "
    "python -c 'import secrets; print(secrets.token_urlsafe(50))'. "
    "For local development only, set DEBUG=true instead (make run does)."
)

PRINT = "from django.conf import settings; print(%s)"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``manage.py`` as an operator runs it, with only the given DEBUG and SECRET_KEY."""
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_without_debug_a_missing_secret_key_stops_start_up_saying_what_to_set():
    done = _manage("check")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == MESSAGE


def test_without_debug_the_development_key_is_refused_too():
    for key in (settings.DEVELOPMENT_SECRET_KEY, "django-insecure-anything-startproject-made", ""):
        done = _manage("check", SECRET_KEY=key, DEBUG="false")
        assert done.returncode == 1, key
        assert done.stderr.strip().splitlines()[-1] == MESSAGE


def test_with_a_secret_key_the_checks_pass_and_debug_is_off_by_default():
    done = _manage("shell", "-v", "0", "-c", PRINT % "settings.DEBUG, settings.SERVE_STATIC",
                   SECRET_KEY="a-real-key-" + "x" * 50)
    assert (done.returncode, done.stdout) == (0, "False False\n"), done.stderr
    done = _manage("check", SECRET_KEY="a-real-key-" + "x" * 50)
    assert (done.returncode, done.stdout) == (0, "System check identified no issues (0 silenced).\n"), done.stderr


def test_debug_true_runs_with_the_development_key_for_make_run():
    done = _manage("shell", "-v", "0", "-c", PRINT % "settings.DEBUG, settings.SECRET_KEY", DEBUG="true")
    assert (done.returncode, done.stdout) == (0, f"True {settings.DEVELOPMENT_SECRET_KEY}\n"), done.stderr
