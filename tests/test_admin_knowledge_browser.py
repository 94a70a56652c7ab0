"""Files and vector stores in the admin as people see them: Chromium at 1280x800 and 390x844 against a live
daphne. Each page is screenshot, must not scroll sideways and must pass axe-core (``tests/browser_checks.py``);
a file is uploaded through the add form and lands in the list."""

from __future__ import annotations

import pytest
from django.conf import settings

from betaassi_django.testing import LiveServer, scratch_database_url
from tests.browser_checks import check_page
from tests.conftest import _database_url
from tests.test_admin_pages_browser import PASSWORD, logged_in

#: Run in the server's database before it starts: two files, a store holding both (one ingested, one failed).
SEED = """
from django.core.files.uploadedfile import SimpleUploadedFile
from betaassi_django.assistants_api.knowledge import files, ingestion, vector_stores

good = files.create_file(SimpleUploadedFile("refund-policy-for-customers-in-every-region.md",
                                            b"# Refunds\\n\\nPaid within 14 days.", "text/markdown"), "assistants")
bad = files.create_file(SimpleUploadedFile("broken.pdf", b"%PDF-1.4 garbage", "application/pdf"), "user_data")
store = vector_stores.create_store({"name": "Policies", "file_ids": [good.id, bad.id]})
# This process's worker thread may have claimed a file first: wait for both to end, or they would be left
# in_progress (with the worker's lease) when the process exits.
import time
from betaassi_django.assistants_api.models import VectorStoreFile
deadline = time.monotonic() + 60
while VectorStoreFile.objects.filter(status="in_progress").exists() and time.monotonic() < deadline:
    ingestion.run_pending()
    time.sleep(0.05)
print(good.pk, store.pk)
"""


@pytest.fixture(scope="module")
def server():
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    with scratch_database_url(_database_url()) as url:
        live = LiveServer(url, env=env, cwd=settings.BASE_DIR)
        live.manage("migrate", "--run-syncdb", "--noinput", "-v", "0")
        live.manage("createsuperuser", "--noinput", "--username", "operator", "--email", "op@example.com")
        live.ids = live.manage("shell", "-c", SEED).split()[-2:]
        with live:
            yield live


@pytest.mark.slow
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_files_and_vector_stores_pages_fit_and_pass_axe(chromium, server, size):
    page = logged_in(chromium, server, size)
    file_pk, store_pk = server.ids

    page.goto(server.url + "/admin/assistants_api/file/")
    assert page.locator("#result_list tbody tr").count() >= 2
    assert page.locator("#result_list tbody td.field-purpose").all_inner_texts()[-2:] == ["user_data", "assistants"]
    check_page(page, f"admin-files-{size}")

    page.goto(server.url + f"/admin/assistants_api/file/{file_pk}/change/")
    assert page.locator("text=Policies").count() == 1
    check_page(page, f"admin-file-{size}")

    page.goto(server.url + "/admin/assistants_api/vectorstore/")
    row = page.locator("#result_list tbody tr", has_text="Policies")
    assert row.locator("td.field-completed").inner_text() == "1"
    assert row.locator("td.field-failed").inner_text() == "1"
    check_page(page, f"admin-vector-stores-{size}")

    page.goto(server.url + f"/admin/assistants_api/vectorstore/{store_pk}/change/")
    statuses = page.locator("#files-group td.field-status").all_inner_texts()
    assert sorted(statuses) == ["completed", "failed"]
    assert "invalid_file: The file could not be read as a PDF" in page.locator("#files-group").inner_text()
    check_page(page, f"admin-vector-store-{size}")

    page.goto(server.url + "/admin/assistants_api/file/add/")
    check_page(page, f"admin-file-add-{size}")
    page.set_input_files("#id_upload", files=[{"name": f"notes-{size}.md", "mimeType": "text/markdown",
                                               "buffer": b"# Notes\n"}])
    page.click("input[name=_save]")
    page.wait_for_url(server.url + "/admin/assistants_api/file/")
    assert page.locator("#result_list tbody tr", has_text=f"notes-{size}.md").count() == 1
    page.context.close()
