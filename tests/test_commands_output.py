"""What the long-running commands print: a line per applied event, and sync progress with a summary."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from betaassi_django.client import get_client
from betaassi_django.models import Session
from tests.conftest import shared_database_url
from tests.testapp.models import Kitchen, StreamThread, Support

pytestmark = pytest.mark.django_db(transaction=True)

#: The example project's format: "<date> <time> LEVEL logger message".
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def _process_once(tmp_path, *args: str, logging_setting: bool) -> subprocess.CompletedProcess:
    """``process_publish_queue --once`` in a process of its own, with or without the project's LOGGING."""
    source = "from tests.settings import *\n" + ("" if logging_setting else "del LOGGING\n")
    (tmp_path / "cmdsettings.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{settings.BASE_DIR}", "DJANGO_SETTINGS_MODULE": "cmdsettings",
           "DATABASE_URL": shared_database_url()}
    env.pop("LOG_LEVEL", None)
    return subprocess.run([sys.executable, "manage.py", "process_publish_queue", "--once", *args],
                          cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def published():
    """A real session.create event waiting in a Support assistant's queue: (assistant, event id)."""
    owner = get_user_model().objects.create_user("carol")
    support = Support.objects.create(name="desk")
    return support, support.sessions.create("s-1", owner=owner)


def _event_lines(stderr: str, event_id: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"event={event_id} " in line]


def test_a_line_per_applied_event_without_a_logging_setting(tmp_path, published):
    support, event_id = published
    done = _process_once(tmp_path, "--assistant", support.id, logging_setting=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "processed 1 event(s)\n"
    [line] = _event_lines(done.stderr, event_id)
    assert re.fullmatch(f"{TIMESTAMP} INFO betaassi_django.publishing event={event_id} assistant={support.id} "
                        "op=session.create session=s-1 status=applied reason=-", line), line
    assert "lease acquired" not in done.stderr  # DEBUG only with -v 2
    assert Session.objects.get(session_id="s-1").assistant_id == support.id


def test_verbosity_zero_is_quiet_and_two_shows_the_leases(tmp_path, published):
    support, event_id = published
    quiet = _process_once(tmp_path, "--assistant", support.id, "-v", "0", logging_setting=False)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    other = Support.objects.create(name="other")
    event_id = other.sessions.create("s-2", owner=get_user_model().objects.get(username="carol"))
    loud = _process_once(tmp_path, "--assistant", other.id, "-v", "2", logging_setting=False)
    assert len(_event_lines(loud.stderr, event_id)) == 1
    assert re.search(f"{TIMESTAMP} DEBUG betaassi_django.publishing lease acquired assistant={other.id} ",
                     loud.stderr)


def test_a_projects_own_logging_is_used_and_not_doubled(tmp_path, published):
    support, event_id = published
    done = _process_once(tmp_path, "--assistant", support.id, logging_setting=True)
    assert done.returncode == 0, done.stderr
    assert len(_event_lines(done.stderr, event_id)) == 1  # the project's console handler, not a second one


def _sync(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync_from_backend", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_sync_shows_progress_and_a_summary():
    api = get_client()
    kept = [Support.objects.create(name=f"kept {i}") for i in range(3)]
    gone = Support.objects.create(name="gone")
    Kitchen.objects.create(count=1)
    api.beta.assistants.delete(gone.id)
    api.beta.assistants.create(model="gpt-4o", name="elsewhere", metadata={"betaassi_type": "testapp.Support"})
    api.beta.assistants.create(model="gpt-4o", name="foreign", metadata={"betaassi_type": "other.Thing"})
    threads = [StreamThread.objects.create(hwm=str(i)) for i in range(3)]
    api.beta.threads.delete(threads[0].id)

    out, err = _sync("--every", "2")
    # The listing holds 3 kept + 1 new Support, 1 Kitchen, 1 foreign: 6 read, then 1 mirror removed.
    assert err.splitlines() == [
        "assistants: 2", "assistants: 4", "assistants: 6", "assistants: 7, done",
        "betaassi_django.Thread: 0 of 0, done", "betaassi_django.Message: 0 of 0, done",
        "betaassi_django.Run: 0 of 0, done", "betaassi_django.StreamThread: 0 of 0, done",
        "testapp.StreamThread: 2 of 3", "testapp.StreamThread: 3 of 3, done",
        "testapp.TaggedThread: 0 of 0, done", "testapp.NotedMessage: 0 of 0, done",
        "testapp.TrackedRun: 0 of 0, done",
    ]
    assert out.splitlines() == [
        "betaassi_django.Assistant: 0 created, 0 updated, 0 removed",
        "betaassi_django.Message: 0 created, 0 updated, 0 removed",
        "betaassi_django.Run: 0 created, 0 updated, 0 removed",
        "betaassi_django.StreamThread: 0 created, 0 updated, 0 removed",
        "betaassi_django.Thread: 0 created, 0 updated, 0 removed",
        "testapp.Kitchen: 0 created, 1 updated, 0 removed",
        "testapp.NotedMessage: 0 created, 0 updated, 0 removed",
        "testapp.StreamThread: 0 created, 2 updated, 1 removed",
        "testapp.Support: 1 created, 3 updated, 1 removed",
        "testapp.TaggedThread: 0 created, 0 updated, 0 removed",
        "testapp.TrackedRun: 0 created, 0 updated, 0 removed",
        "assistants of other types (no model here): 1 skipped",
    ]
    assert sorted(Support.objects.values_list("name", flat=True)) == ["elsewhere", *(k.name for k in kept)]
    assert _sync("-v", "0") == ("", "")
