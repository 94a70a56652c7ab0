"""Issue 16: a processor's idle cost does not grow with the number of assistants.

Two scratch databases, one with 1,000 assistants with publish queues and one with 1 (the baseline). On each,
daphne with the in-server processor and then ``manage.py process_publish_queue`` run alone, one process at a
time, in alternating order: each settles (its start-up sweep drains every queue), then its CPU over
``BENCH_IDLE_SECONDS`` (20) of no traffic is read from ``/proc/<pid>/stat`` (utime + stime) as a share of one
core. With 1,000 assistants the window follows the second sweep (``BETAASSI_PUBLISH_SWEEP_SECONDS`` is 20 s
here, 60 s by default; a sweep that would cost more than 1% of a core puts the next one further off), and the
sweeps' share is added from the processor's own log line (``swept N queue(s) in S s of CPU; next sweep in
T s``: S/T; without the line, sweeps came every 20 s and the window holds one). Last, one event is
published from another process (no wake-up reaches the processor: it finds the event by its hint) and must be
applied. ``BENCH_IDLE_ROOT`` runs the processes from another checkout (to measure an older version).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from betaassi_django.testing import LiveServer, scratch_database_url

from .report import add

NAME = "idle processor"
MANY = 1000
LIMIT = 2.0  # % of a core
SWEPT = re.compile(r"swept \d+ queue\(s\) in ([\d.]+)s of CPU; next sweep in ([\d.]+)s")
CREATE = """
from betaassi_django.client import get_client
from betaassi_django.publishing.backend import create_queue
api = get_client()
for _ in range({count}):
    made = api.beta.assistants.create(model="gpt-4o-mini", name="idle", metadata=create_queue(api))
print(made.id)
"""
PUBLISH = """
import time
from django.contrib.auth import get_user_model
from betaassi_django.client import get_client
from betaassi_django.publishing.events import Event
from betaassi_django.publishing.publisher import publish, wait
user = get_user_model().objects.get_or_create(username="idle-bench")[0]
assistant = get_client().beta.assistants.retrieve("{assistant}")
start = time.perf_counter()
record = wait(publish(assistant, Event("session.create", "{session}", {{"owner": user.pk}})), timeout=60)
print(record.status, round((time.perf_counter() - start) * 1000))
"""


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, *, quiet: float = 0.05, most: float = float(os.environ.get("BENCH_IDLE_SETTLE", "90"))) -> float:
    """Wait until the process used under ``quiet`` s of CPU in 2 s (its start-up sweep is done): seconds waited."""
    start = time.monotonic()
    time.sleep(3)
    while time.monotonic() - start < most:
        before = cpu_seconds(pid)
        time.sleep(2)
        if cpu_seconds(pid) - before < quiet:
            break
    return time.monotonic() - start


def measure(pid: int, seconds: float) -> float:
    """% of one core the process used over ``seconds``."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)


def manage(root: Path, env: dict[str, str], script: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"manage.py shell failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def sweep_line(log: Path) -> tuple[float, float] | None:
    """The processor's last sweep line: its CPU seconds and the seconds to the next sweep (None: no line)."""
    found = SWEPT.findall(log.read_text(errors="replace"))
    return (float(found[-1][0]), float(found[-1][1])) if found else None


@contextlib.contextmanager
def daphne(url: str, root: Path, env: dict[str, str]):
    server = LiveServer(url, cwd=root, env={**env, "BETAASSI_IN_SERVER_PROCESSOR": "true"})
    with server:
        yield server.process.pid, server.log_path


@contextlib.contextmanager
def queue_processor(url: str, root: Path, env: dict[str, str]):
    log = Path(tempfile.mkstemp(prefix="betaassi-idle-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "process_publish_queue"], cwd=root,
                                   env={**env, "DATABASE_URL": url}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process.pid, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


def run(like: str, root: Path) -> None:
    root = Path(os.environ.get("BENCH_IDLE_ROOT") or root)
    seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", LOG_LEVEL="INFO", BETAASSI_PUBLISH_SWEEP_SECONDS="20",
               BETAASSI_IN_SERVER_PROCESSOR="false", SECRET_KEY="bench-idle-" + "x" * 40)
    with scratch_database_url(like) as one_url, scratch_database_url(like) as many_url:
        last: dict[str, str] = {}
        for count, url in ((1, one_url), (MANY, many_url)):
            with_db = {**env, "DATABASE_URL": url}
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=root, env=with_db,
                           check=True)
            last[url] = manage(root, with_db, CREATE.format(count=count))
        figures: dict[tuple[str, int], float] = {}
        sweeps: dict[tuple[str, int], tuple[float, float] | None] = {}
        applied: dict[tuple[str, int], str] = {}
        order = [("daphne", 1), ("daphne", MANY), ("process_publish_queue", MANY), ("process_publish_queue", 1)]
        for kind, count in order:
            url = one_url if count == 1 else many_url
            start = daphne if kind == "daphne" else queue_processor
            with start(url, root, env) as (pid, log):
                settle(pid)
                if count == MANY and "BENCH_IDLE_ROOT" not in os.environ:  # its second sweep (20 s after the first)
                    deadline = time.monotonic() + 120  # says its cost, and when the next is
                    while sweep_line(log) is None and time.monotonic() < deadline:
                        time.sleep(1)
                    settle(pid)
                figures[kind, count] = measure(pid, seconds)
                sweeps[kind, count] = sweep_line(log)
                script = PUBLISH.format(assistant=last[url], session=f"idle-{kind}-{count}")
                applied[kind, count] = manage(root, {**env, "DATABASE_URL": url}, script)
        for kind in ("daphne", "process_publish_queue"):
            label = "daphne, in-server processor" if kind == "daphne" else "process_publish_queue"
            base, between, swept = figures[kind, 1], figures[kind, MANY], sweeps[kind, MANY]
            add(NAME, f"{label}: 1 assistant", f"{base:5.2f}% of a core", "", "baseline")
            status, ms = [*applied[kind, MANY].split(), "?", "?"][:2]
            share = 100 * swept[0] / swept[1] if swept else 0.0
            many = between + share
            parts = (f"{between:.2f}% between sweeps + {share:.2f}% sweeps: {swept[0]:.1f} s of CPU every "
                     f"{swept[1]:.0f} s" if swept else "no sweep line")
            ok = many < LIMIT and status == "applied"
            add(NAME, f"{label}: {MANY} assistants",
                f"{many:5.2f}% of a core ({parts}); an event then {status} in {ms} ms", f"+{many - base:.2f} pp",
                f"< {LIMIT}% and applied: {'met' if ok else 'MISSED'}")
