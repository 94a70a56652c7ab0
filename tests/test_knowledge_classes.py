"""Knowledge declared on an assistant class (``knowledge = [...]``), through the app's own models, against the
embedded backend and the daphne server as a remote one: the files are uploaded into a vector store that the
assistant's ``file_search`` uses, uploaded again only when they change, and the old store and files deleted."""

from __future__ import annotations

import time

import openai
import pytest
from django.core.exceptions import ImproperlyConfigured

from betaassi_django.client import get_client
from betaassi_django.models import BaseAssistant, Session
from betaassi_django.models.knowledge import KNOWLEDGE_KEY
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

HANDBOOK = b"# Handbook\n\nRefunds are paid within 14 days of the return.\n"
RETURNS = b"Returns are accepted for 30 days with the receipt.\n"


@pytest.fixture
def declared(backend, settings, tmp_path, monkeypatch):
    """Support declaring two files under a BASE_DIR of the test's own."""
    settings.BASE_DIR = tmp_path
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "handbook.md").write_bytes(HANDBOOK)
    (tmp_path / "docs" / "returns.txt").write_bytes(RETURNS)
    monkeypatch.setattr(Support, "knowledge", ["docs/handbook.md", "docs/returns.txt"])
    return tmp_path


def store_of(assistant_id: str) -> str:
    remote = get_client().beta.assistants.retrieve(assistant_id)
    assert {"type": "file_search"} in [{"type": t.type} for t in remote.tools]
    [store_id] = remote.tool_resources.file_search.vector_store_ids
    return store_id


def files_in(store_id: str) -> dict[str, bytes]:
    api = get_client()
    found = {}
    for entry in api.vector_stores.files.list(store_id).data:
        file = api.files.retrieve(entry.id)
        found[file.filename] = api.files.content(entry.id).content
    return found


def file_ids() -> set[str]:
    return {f.id for f in get_client().files.list().data}


def test_creating_the_assistant_uploads_its_knowledge_into_a_store_it_searches(declared):
    before = file_ids()
    desk = Support.objects.create(name="Desk", model="echo")
    store_id = store_of(desk.id)
    assert files_in(store_id) == {"handbook.md": HANDBOOK, "returns.txt": RETURNS}
    assert len(file_ids() - before) == 2
    marker = desk.metadata[KNOWLEDGE_KEY]
    assert marker.startswith(f"{store_id}:") and len(marker) == len(store_id) + 25
    assert get_client().vector_stores.retrieve(store_id).name == "testapp.Support knowledge"
    assert Support.retrieve(desk.id).metadata[KNOWLEDGE_KEY] == marker


def ingested(store_id: str, count: int, timeout: float = 30) -> None:
    """Wait until the store's files are ingested (the backend does it in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_client().vector_stores.retrieve(store_id).file_counts.completed == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{store_id}: not {count} files completed after {timeout}s")


def test_a_session_of_the_assistant_answers_from_its_knowledge(declared, alice):
    desk = Support.objects.create(name="Desk", model="echo")
    store_id = store_of(desk.id)
    ingested(store_id, 2)
    desk.sessions.create("s-1", owner=alice)
    Processor().run_once()
    session = Session.objects.get(session_id="s-1")
    reply = session.ask("How many days until refunds are paid?")
    assert reply == "echo: How many days until refunds are paid? [context=1] 【0:0†handbook.md】"
    assert session.ask("And returns with the receipt?").endswith("【0:0†returns.txt】")


def test_a_save_uploads_again_only_when_the_files_changed(declared):
    desk = Support.objects.create(name="Desk", model="echo")
    first = store_of(desk.id)
    uploaded = file_ids()
    desk.tier = 2
    desk.save()
    assert (store_of(desk.id), file_ids()) == (first, uploaded)  # unchanged: nothing uploaded

    old_files = {entry.id for entry in get_client().vector_stores.files.list(first).data}
    assert len(old_files) == 2
    (declared / "docs" / "returns.txt").write_bytes(b"Returns are accepted for 60 days now.\n")
    desk.save()
    second = store_of(desk.id)
    assert second != first
    assert files_in(second) == {"handbook.md": HANDBOOK, "returns.txt": b"Returns are accepted for 60 days now.\n"}
    api = get_client()
    with pytest.raises(openai.NotFoundError):
        api.vector_stores.retrieve(first)
    assert not old_files & file_ids()  # the old store's files are gone with it
    assert Support.retrieve(desk.id).tier == 2


def test_deleting_the_assistant_deletes_its_knowledge_store_and_files(declared):
    before = file_ids()
    desk = Support.objects.create(name="Desk", model="echo")
    store_id = store_of(desk.id)
    desk.delete()
    assert file_ids() == before
    assert store_id not in [s.id for s in get_client().vector_stores.list(limit=100).data]


def test_a_declared_vector_store_is_used_as_it_is(backend, monkeypatch):
    api = get_client()
    shared = api.files.create(file=("faq.md", b"Opening hours: 9 to 5.", "text/markdown"), purpose="assistants")
    store = api.vector_stores.create(name="shared", file_ids=[shared.id])
    monkeypatch.setattr(Support, "knowledge", [store.id])
    desk = Support.objects.create(name="Desk", model="echo")
    assert store_of(desk.id) == store.id
    assert desk.metadata[KNOWLEDGE_KEY] == store.id
    desk.delete()
    assert api.vector_stores.retrieve(store.id).id == store.id  # not the class's: kept
    assert api.files.retrieve(shared.id).id == shared.id


def test_a_missing_file_refuses_the_save_before_anything_is_created(declared, monkeypatch):
    monkeypatch.setattr(Support, "knowledge", ["docs/handbook.md", "docs/missing.pdf"])
    before = (file_ids(), [a.id for a in get_client().beta.assistants.list(limit=100).data])
    with pytest.raises(ImproperlyConfigured) as caught:
        Support.objects.create(name="Desk", model="echo")
    assert str(caught.value) == (f"Knowledge file {declared / 'docs' / 'missing.pdf'} does not exist (paths are "
                                 "relative to BASE_DIR).")
    assert (file_ids(), [a.id for a in get_client().beta.assistants.list(limit=100).data]) == before
    assert not Support.objects.exists()


@pytest.mark.parametrize("value, message", [
    (["vs_a", "vs_b"], "declares 2 vector store id(s) and 0 file(s)"),
    (["vs_a", "docs/a.md"], "declares 1 vector store id(s) and 1 file(s)"),
    ("docs/a.md", "must be a list of file paths or vector store ids"),
    ([""], "must be a list of file paths or vector store ids"),
])
def test_a_declaration_no_backend_can_serve_fails_when_the_class_is_defined(value, message):
    with pytest.raises(ImproperlyConfigured) as caught:
        class Confused(BaseAssistant):
            knowledge = value

            class Meta:
                abstract = True
                app_label = "testapp"
    assert f"<locals>.Confused.knowledge {message}" in str(caught.value)
