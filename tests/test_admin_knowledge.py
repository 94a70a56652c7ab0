"""Files and vector stores in the admin, driven with Django's test client: upload, list, download, delete; stores
with their files' statuses and errors, files added and taken out; and who may do which (403 without the
permission). Every admin link on the pages is followed (``follow_all``)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile

from betaassi_django.assistants_api.knowledge import files, vector_stores
from betaassi_django.assistants_api.models import File, VectorStore, VectorStoreFile
from betaassi_django.templatetags.betaassi import short_id, shorten
from tests.admin_paths import admin_path
from tests.conftest import client_of
from tests.test_admin_pages import follow_all
from tests.test_api_files import stored_names

pytestmark = pytest.mark.django_db(transaction=True)

HANDBOOK = b"# Handbook\n\nRefunds are paid within 14 days.\n"


def stored(file_id: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "betaassi" / "files" / file_id


def upload(web, name: str, data: bytes, purpose: str = "assistants"):
    return web.post(admin_path(File, "add"), {"upload": SimpleUploadedFile(name, data, "text/markdown"),
                                              "purpose": purpose})


def make_file(name: str, data: bytes) -> File:
    return files.create_file(SimpleUploadedFile(name, data, "text/plain"), "assistants")


def rows(page) -> list[list[str]]:
    """The changelist's rows as the text of their cells (tags dropped)."""
    body = page.content.decode().split('<tbody>', 1)[1].split('</tbody>', 1)[0]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def settled(store: VectorStore, timeout: float = 30) -> list[VectorStoreFile]:
    """The store's files once none is in_progress (the ingestion worker takes them in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(store.files.order_by("seq"))
        if all(f.status != "in_progress" for f in found):
            return found
        time.sleep(0.02)
    raise AssertionError(f"files of {store.id} still in_progress after {timeout}s")


def test_upload_list_download_and_delete_a_file(web):
    done = upload(web, "handbook.md", HANDBOOK)
    assert done.status_code == 302, done.content.decode()[:2000]
    file = File.objects.get()
    assert (file.filename, file.purpose, file.bytes, file.content_type) == ("handbook.md", "assistants", 45,
                                                                           "text/markdown")
    assert stored(file.id).read_bytes() == HANDBOOK
    assert file.id.startswith("file-") and shorten(file.id) == f"file-{file.id[5:9]}…{file.id[-5:]}"

    listing = web.get(admin_path(File, "changelist"))
    assert rows(listing) == [["", "handbook.md", "assistants", "45\xa0bytes", "just now", "never",
                                  shorten(file.id)]]
    assert short_id(file.id) in listing.content.decode()
    follow_all(web, admin_path(File, "changelist"))
    links = follow_all(web, admin_path(File, "change", file.pk))
    content = admin_path(File, "change", file.pk).replace("/change/", "/content/")
    assert content in links
    download = web.get(content)
    assert b"".join(download.streaming_content) == HANDBOOK
    assert download["Content-Disposition"] == 'attachment; filename="handbook.md"'
    assert download["Content-Type"] == "text/markdown"

    store = vector_stores.create_store({"name": "Policies", "file_ids": [file.id]})
    assert web.get(admin_path(File, "delete", file.pk)).status_code == 200
    gone = web.post(admin_path(File, "delete", file.pk), {"post": "yes"})
    assert gone.status_code == 302
    assert not File.objects.exists() and not stored(file.id).exists()
    assert not store.files.exists()  # taken out of the store too, as DELETE /v1/files does


def test_refused_uploads_are_form_errors_and_store_nothing(web, settings):
    settings.BETAASSI_FILE_MAX_BYTES = 10
    before = stored_names()
    for name, data, purpose, error in [
        ("big.md", b"x" * 11, "assistants", "The file is 11 bytes, more than the 10 bytes this server accepts."),
        ("empty.md", b"", "assistants", "The submitted file is empty."),
        ("a.md", b"a", "batch", "Select a valid choice. batch is not one of the available choices."),
    ]:
        page = upload(web, name, data, purpose)
        assert page.status_code == 200
        assert error in page.content.decode()
    assert not File.objects.exists()
    assert stored_names() == before


def test_deleting_files_with_the_action_removes_their_bytes(web):
    made = [make_file(f"{n}.txt", n.encode()) for n in ("one", "two", "three")]
    done = web.post(admin_path(File, "changelist"), {"action": "delete_selected", "post": "yes",
                                                     "_selected_action": [f.pk for f in made[:2]]})
    assert done.status_code == 302
    assert list(File.objects.values_list("filename", flat=True)) == ["three.txt"]
    assert [stored(f.id).exists() for f in made] == [False, False, True]


def test_a_vector_store_is_made_listed_and_shows_its_files(web):
    good = make_file("refunds.md", HANDBOOK)
    bad = make_file("broken.pdf", b"%PDF-1.4\n1 0 obj garbage")
    later = make_file("later.txt", b"Shipping takes 3 days.")
    add = web.get(admin_path(VectorStore, "add")).content.decode()
    assert f'value="{good.id}"' in add and "refunds.md" in add
    done = web.post(admin_path(VectorStore, "add"), {"name": "Policies", "add_files": [good.id, bad.id]})
    assert done.status_code == 302, done.content.decode()[:3000]
    store = VectorStore.objects.get()
    assert [(f.file_id, f.status) for f in settled(store)] == [(good.id, "completed"), (bad.id, "failed")]
    usage = vector_stores.serialize_store(store)["usage_bytes"]
    assert usage > 0

    listing = web.get(admin_path(VectorStore, "changelist"))
    assert rows(listing) == [["", "Policies", "completed", "1", "0", "1", "2", f"{usage}\xa0bytes", "just now",
                                  shorten(store.id)]]
    links = follow_all(web, admin_path(VectorStore, "change", store.pk))
    assert admin_path(File, "change", good.pk) in links and admin_path(File, "change", bad.pk) in links
    page = web.get(admin_path(VectorStore, "change", store.pk)).content.decode()
    assert "<h2>Policies</h2>" in page
    failed = VectorStoreFile.objects.get(file_id=bad.id).last_error
    assert failed["code"] == "invalid_file"
    assert f"invalid_file: {failed['message']}" in page
    # The files to add are those not in the store yet.
    assert f'value="{later.id}"' in page and f'value="{good.id}"' not in page
    file_page = web.get(admin_path(File, "change", good.pk)).content.decode()
    assert re.search(r'<a href="[^"]+">Policies</a> \(completed\)', file_page)


def formset_data(page) -> dict:
    """The data a change form posts as rendered: its fields and its inline's management form and rows."""
    data = {"name": page.context["adminform"].form.initial.get("name") or ""}
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({management.add_prefix(k): v for k, v in management.initial.items()})
        for form in formset.formset.forms:
            data[form.add_prefix("seq")] = form.instance.pk  # the primary key of VectorStoreFile
            data[form.add_prefix("vector_store")] = form.instance.vector_store_id
    return data


def test_files_are_added_to_a_store_and_taken_out_of_it(web):
    first, second = make_file("a.md", b"alpha text"), make_file("b.md", b"beta text")
    store = vector_stores.create_store({"name": "Notes", "file_ids": [first.id]})
    settled(store)
    path = admin_path(VectorStore, "change", store.pk)
    data = formset_data(web.get(path))
    done = web.post(path, {**data, "name": "Notes 2", "add_files": [second.id]}, follow=True)
    assert "Added 1 file(s); they are ingested in the background." in done.content.decode()
    assert [(f.file_id, f.status) for f in settled(store)] == [(first.id, "completed"), (second.id, "completed")]
    assert VectorStore.objects.get().name == "Notes 2"

    data = formset_data(web.get(path))
    prefix = next(k for k, v in data.items() if k.endswith("-seq") and v == store.files.get(file_id=first.id).pk)
    done = web.post(path, {**data, prefix.replace("-seq", "-DELETE"): "on"})
    assert done.status_code == 302
    assert list(store.files.values_list("file_id", flat=True)) == [second.id]
    assert File.objects.filter(id=first.id).exists()  # the file stays; only its place in the store went

    assert web.post(admin_path(VectorStore, "delete", store.pk), {"post": "yes"}).status_code == 302
    assert not VectorStore.objects.exists() and not VectorStoreFile.objects.exists()
    assert File.objects.count() == 2


def staff_with(*codenames: str):
    user = get_user_model().objects.create_user(f"staff-{len(codenames)}-{'-'.join(codenames)}"[:150],
                                                password="x-pass-12345", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="assistants_api",
                                                        codename__in=codenames))
    return client_of(user)


def test_staff_without_the_permissions_get_403(db):
    file = make_file("secret.txt", b"secret")
    store = vector_stores.create_store({"name": "S", "file_ids": []})
    content = admin_path(File, "change", file.pk).replace("/change/", "/content/")
    nobody = staff_with()
    for path in (admin_path(File, "changelist"), admin_path(File, "add"), admin_path(File, "change", file.pk),
                 content, admin_path(File, "delete", file.pk), admin_path(VectorStore, "changelist"),
                 admin_path(VectorStore, "change", store.pk), admin_path(VectorStore, "add")):
        assert nobody.get(path).status_code == 403, path
    assert upload(nobody, "x.md", b"x").status_code == 403
    assert nobody.post(admin_path(File, "delete", file.pk), {"post": "yes"}).status_code == 403

    viewer = staff_with("view_file", "view_vectorstore")
    assert viewer.get(admin_path(File, "changelist")).status_code == 200
    assert b"".join(viewer.get(content).streaming_content) == b"secret"
    page = viewer.get(admin_path(VectorStore, "change", store.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    for path in (admin_path(File, "add"), admin_path(File, "delete", file.pk), admin_path(VectorStore, "add")):
        assert viewer.get(path).status_code == 403, path
    assert upload(viewer, "x.md", b"x").status_code == 403
    assert viewer.post(admin_path(File, "delete", file.pk), {"post": "yes"}).status_code == 403
    assert viewer.post(admin_path(VectorStore, "delete", store.pk), {"post": "yes"}).status_code == 403
    assert list(File.objects.values_list("id", flat=True)) == [file.id] and stored(file.id).exists()
    assert VectorStore.objects.filter(pk=store.pk).exists()

    uploader = staff_with("add_file", "view_file")
    assert upload(uploader, "mine.md", b"mine").status_code == 302
    assert File.objects.filter(filename="mine.md").exists()
