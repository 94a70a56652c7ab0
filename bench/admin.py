"""Issue 6: what the admin's pages cost: backend calls per page, and time against a plain changelist.

The assistant changelist reads each listed assistant's queue lag from the
backend (two calls per row), the sessions changelist the queues of the
assistants it shows. The baseline is Django's own changelist of a local model
with as many rows (the API keys), requested alternately with the same client.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import Client

from betaassi_django.admin.common import admin_url
from betaassi_django.assistants_api.models import ApiKey
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

from .report import Timing, add, add_timing

NAME = "admin"
ROWS = 25  # one changelist page of assistants


def run(recorder: list, n: int) -> None:
    staff = get_user_model().objects.create_superuser("bench-admin", "bench@example.com", "bench-pass-1")
    web = Client(HTTP_HOST="localhost")
    web.force_login(staff)
    desks = [Support.objects.create(name=f"admin bench {index}") for index in range(ROWS)]
    for desk in desks:
        desk.sessions.create("s-1", owner=staff)
    Processor(assistant_ids=[d.id for d in desks]).run_once()
    for index in range(ROWS):
        ApiKey.issue(f"admin bench {index}")

    pages = {
        "assistant changelist": "/admin/testapp/support/?q=admin+bench",
        "sessions changelist": f"/admin/betaassi_django/session/?q=s-1&assistant={desks[0].id}",
        "publish-queue page": admin_url(Support, "queue", desks[0].id),  # the id quoted, as the admin's own links
    }
    baseline_url = "/admin/assistants_api/apikey/?q=admin+bench"
    for path, url in pages.items():
        recorder.clear()
        assert web.get(url).status_code == 200, url
        add(NAME, f"{path}: backend calls", f"{len(recorder)} call(s)", "",
            _calls_target(path, len(recorder)))

    samples = max(30, n // 5)
    baseline = Timing()
    timings = {path: Timing() for path in pages}
    for _ in range(5):  # warm-up
        web.get(baseline_url), *(web.get(url) for url in pages.values())
    for _ in range(samples):
        for path, url in pages.items():
            baseline.measure(lambda: web.get(baseline_url))
            timings[path].measure(lambda url=url: web.get(url))
    add_timing(NAME, f"plain changelist ({ROWS} API keys)", baseline)
    for path, timing in timings.items():
        add_timing(NAME, path, timing, timing.p50_ms / baseline.p50_ms, "vs plain changelist, p50 (informative)")


def _calls_target(path: str, calls: int) -> str:
    """Two reads per queue shown: each listed assistant's, the one filtered by, or the page's own (plus a page
    and the consumer directory)."""
    expected = {"assistant changelist": 2 * ROWS, "sessions changelist": 2, "publish-queue page": 4}[path]
    return f"= {expected}: {'met' if calls == expected else 'MISSED'}"
