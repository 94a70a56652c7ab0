"""Ingestion of vector store files: parsing each format, static chunking, failures, and a process killed
mid-ingestion (another finishes the file)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from betaassi_django.assistants_api import tokens
from betaassi_django.assistants_api.knowledge import chunking, ingestion, parsing, vector_stores
from betaassi_django.assistants_api.models import Chunk, File, VectorStoreFile
from tests.conftest import shared_database_url
from tests.fake_upstream import FakeUpstream, Status

pytestmark = pytest.mark.django_db(transaction=True)


def make_file(name: str, data: bytes) -> File:
    file = File(filename=name, purpose="assistants", bytes=len(data))
    file.content.save(file.id, ContentFile(data), save=False)
    file.save()
    return file


def ingested(name: str, data: bytes, strategy: dict | None = None) -> VectorStoreFile:
    """A file added to a new store and ingested here (not by the worker thread)."""
    store = vector_stores.create_store({})
    vs_file = vector_stores.add_file(store, make_file(name, data).id, chunking_strategy=strategy)
    deadline = time.monotonic() + 30
    while True:
        ingestion.run_pending()
        vs_file.refresh_from_db()
        if vs_file.status != "in_progress":
            return vs_file
        assert time.monotonic() < deadline, "the file stayed in_progress"
        time.sleep(0.05)  # the worker thread holds it: wait for its end


def texts(vs_file: VectorStoreFile) -> list[str]:
    return list(Chunk.objects.filter(vector_store_file=vs_file).order_by("index").values_list("text", flat=True))


# -- formats ------------------------------------------------------------------------------------------------------


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text``, written by hand (offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def docx_bytes(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "cell one", "cell two"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_each_format_is_parsed_to_its_text():
    assert parsing.extract(b"plain words\n", "a.txt") == "plain words\n"
    assert parsing.extract("# Title\n\n*bold* caf\u00e9".encode(), "notes.md") == "# Title\n\n*bold* caf\u00e9"
    html = (b"<html><head><title>T</title><style>p{color:red}</style></head><body><h1>Heading</h1>"
            b"<script>alert('x')</script><p>First &amp; <b>bold</b></p><noscript>no</noscript><p>Second</p></body>"
            b"</html>")
    assert parsing.extract(html, "page.html") == "Heading\nFirst & bold\nSecond"
    assert parsing.extract(minimal_pdf("Hello from a PDF"), "doc.pdf").strip() == "Hello from a PDF"
    assert parsing.extract(docx_bytes("First paragraph", "Second one"), "doc.docx") == (
        "First paragraph\nSecond one\ncell one | cell two")
    assert parsing.extract(b'{"b": [1, "\\u00e9"]}', "data.json") == '{\n  "b": [\n    1,\n    "\u00e9"\n  ]\n}'
    code = b"def f(x):\n    return x * 2\n"
    assert parsing.extract(code, "module.py") == code.decode()
    assert parsing.extract("utf-16 text".encode("utf-16"), "u.txt") == "utf-16 text"


def test_a_name_without_a_known_extension_is_sniffed():
    assert parsing.extract(minimal_pdf("Sniffed"), "upload").strip() == "Sniffed"
    assert parsing.extract(docx_bytes("Sniffed docx"), "upload.bin").startswith("Sniffed docx")
    assert parsing.extract(b"<!DOCTYPE html><p>Sniffed html</p><script>x()</script>", "x") == "Sniffed html"
    assert parsing.extract(b'{"a":1}', "noext") == '{\n  "a": 1\n}'
    assert parsing.extract(b"just text", "README") == "just text"


@pytest.mark.parametrize(("name", "data", "code", "message"), [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", "invalid_file", "The file could not be read as a PDF"),
    ("lies.pdf", b"this is plain text, not a PDF", "invalid_file", "The file could not be read as a PDF"),
    ("lies.docx", b"plain text", "invalid_file", "The file could not be read as a DOCX document"),
    ("garbage.bin", bytes(range(256)) * 4, "invalid_file", "The file is not valid UTF-8 text"),
    ("nul.txt", b"text\x00with nul", "invalid_file", "The file holds binary data (NUL bytes)"),
    ("empty.txt", b"", "invalid_file", "The file holds no text to index."),
    ("blank.md", b" \n\t\n", "invalid_file", "The file holds no text to index."),
    ("hidden.html", b"<script>only()</script><style>x{}</style>", "invalid_file", "The file holds no text"),
    ("bad.json", b'{"a": ', "invalid_file", "The file is not valid JSON"),
    ("deep.json", b"[" * 100000 + b"]" * 100000, "invalid_file", "The JSON file is nested too deeply to be read."),
    ("deep", b"[" * 100000 + b"]" * 100000, "invalid_file", "The JSON file is nested too deeply to be read."),
    ("archive", b"PK\x03\x04" + b"\x00" * 40, "unsupported_file", "The file is an archive of an unsupported kind."),
])
def test_a_file_without_text_fails_with_last_error(name, data, code, message):
    vs_file = ingested(name, data)
    assert vs_file.status == "failed" and vs_file.claimed_at is None and vs_file.usage_bytes == 0
    assert vs_file.last_error["code"] == code and vs_file.last_error["message"].startswith(message)
    assert texts(vs_file) == []


def test_a_pdf_and_a_docx_are_ingested():
    pdf = ingested("doc.pdf", minimal_pdf("Quarterly revenue grew"))
    assert (pdf.status, pdf.last_error, texts(pdf)) == ("completed", None, ["Quarterly revenue grew"])
    assert pdf.usage_bytes == len("Quarterly revenue grew")
    word = ingested("doc.docx", docx_bytes("Alpha", "Beta"))
    assert texts(word) == ["Alpha\nBeta\ncell one | cell two"]


# -- chunking -----------------------------------------------------------------------------------------------------


def test_static_windows_are_exact():
    assert chunking.windows(0, 100, 50) == []
    assert chunking.windows(100, 100, 50) == [(0, 100)]
    assert chunking.windows(101, 100, 50) == [(0, 100), (50, 101)]
    assert chunking.windows(250, 100, 50) == [(0, 100), (50, 150), (100, 200), (150, 250)]
    assert chunking.windows(1000, 800, 400) == [(0, 800), (400, 1000)]
    assert chunking.windows(300, 100, 0) == [(0, 100), (100, 200), (200, 300)]


def test_static_chunks_of_a_known_text():
    # " w0 w1 ...": each " wN" with N < 1000 is a known number of tokens; build exactly 1000 tokens of words.
    words = [f" word{i}" for i in range(2000)]
    ids = tokens.encode("".join(words))[:1000]
    text = tokens.decode(ids)
    assert tokens.count(text) == 1000
    pieces = chunking.chunk(text, 300, 100)
    assert [count for _, count in pieces] == [300, 300, 300, 300, 200]
    assert [piece for piece, _ in pieces] == [tokens.decode(ids[s:e]) for s, e in
                                              [(0, 300), (200, 500), (400, 700), (600, 900), (800, 1000)]]
    default = chunking.chunk(text)
    assert [(piece, count) for piece, count in default] == [(tokens.decode(ids[:800]), 800),
                                                            (tokens.decode(ids[400:]), 600)]


def test_a_file_is_chunked_with_its_strategy_and_reports_it():
    text = "".join(f" item{i}" for i in range(400))
    n = tokens.count(text)
    vs_file = ingested("list.txt", text.encode(), {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                                                 "chunk_overlap_tokens": 50}})
    assert vs_file.chunking_strategy == {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                                      "chunk_overlap_tokens": 50}}
    expected = [tokens.decode(tokens.encode(text)[s:e]) for s, e in chunking.windows(n, 100, 50)]
    assert texts(vs_file) == expected and len(expected) == len(chunking.windows(n, 100, 50))
    assert vs_file.usage_bytes == sum(len(t.encode()) for t in expected)
    auto = ingested("auto.txt", b"short")
    assert auto.chunking_strategy == {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                                   "chunk_overlap_tokens": 400}}
    assert texts(auto) == ["short"]


def test_a_large_file_gives_exactly_its_windows():
    text = "".join(f" term{i % 997} and more" for i in range(150_000))  # ~3 MB
    n = tokens.count(text)
    vs_file = ingested("large.txt", text.encode(), {"type": "static", "static": {"max_chunk_size_tokens": 4096,
                                                                                  "chunk_overlap_tokens": 2048}})
    assert vs_file.status == "completed"
    counts = list(Chunk.objects.filter(vector_store_file=vs_file).order_by("index").values_list("tokens", flat=True))
    assert counts == [end - start for start, end in chunking.windows(n, 4096, 2048)]


def test_a_long_text_is_encoded_in_segments_as_a_whole():
    lines = [f"Line {i}: caf\u00e9 {i * 7}.\n" + ("  indented\n" if i % 3 else "/path\n") + "\r\n" * (i % 2)
             for i in range(70_000)]
    text = "".join(lines) + "x" * 10  # ~2 MB, cut in segments
    assert len(text) > 2 * chunking.SEGMENT_CHARS
    assert len(list(chunking._segments(text))) >= 2
    assert chunking.encode(text).tolist() == tokens.encode(text)
    one_line = "word " * (chunking.SEGMENT_CHARS // 4)  # no newline to cut at: one segment
    assert list(chunking._segments(one_line)) == [one_line]


def test_a_character_split_by_a_window_is_left_out_not_garbled():
    text = "\U0001f9d1\u200d\U0001f9af" * 200  # multi-token emoji sequences
    for piece, _ in chunking.chunk(text, 100, 50):
        assert "\ufffd" not in piece and piece


@pytest.fixture
def embedding(settings):
    """An embeddings model configured, served by the fake upstream."""
    with FakeUpstream() as upstream:
        settings.BETAASSI_EMBEDDINGS_MODEL = "text-embedding-3-small"
        settings.BETAASSI_EMBEDDINGS_DIMENSIONS = 8
        settings.BETAASSI_UPSTREAM_BASE_URL = upstream.base_url
        settings.BETAASSI_UPSTREAM_API_KEY = "sk-upstream-test"
        settings.BETAASSI_UPSTREAM_MAX_RETRIES = 0
        yield upstream
    assert upstream.violations == []


def test_chunks_are_embedded_and_a_refusing_endpoint_fails_the_file(embedding):
    done = ingested("e.txt", b"embedded words")
    assert done.status == "completed"
    assert [len(bytes(c.embedding)) for c in Chunk.objects.filter(vector_store_file=done)] == [8 * 4]
    embedding.embeddings_failure = Status(503, "The model is down.")
    failed = ingested("f.txt", b"not embedded")
    assert (failed.status, failed.last_error["code"]) == ("failed", "server_error")
    assert "The model is down." in failed.last_error["message"] and texts(failed) == []


# -- leases and a killed process --------------------------------------------------------------------------------


def test_a_claimed_file_is_not_claimed_twice_until_its_lease_runs_out():
    store = vector_stores.create_store({})
    vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("a.txt", b"hello").id,
                                             chunking_strategy={"type": "static", "static": vector_stores.AUTO})
    first = ingestion.claim()
    assert first is not None and first[0].pk == vs_file.pk
    assert ingestion.claim() is None
    with override_settings(BETAASSI_INGEST_LEASE_SECONDS=0.2):
        time.sleep(0.3)
        second = ingestion.claim()
        assert second is not None and second[0].pk == vs_file.pk
        # The first holder lost its lease: its result is not written.
        assert ingestion.ingest(*first) == "lost"
        assert ingestion.ingest(*second) == "completed"
    vs_file.refresh_from_db()
    assert (vs_file.status, vs_file.claimed_at) == ("completed", None)
    assert texts(vs_file) == ["hello"]


def test_a_cancelled_file_is_not_written():
    store = vector_stores.create_store({})
    vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("a.txt", b"hello").id)
    claimed = ingestion.claim()
    VectorStoreFile.objects.filter(pk=vs_file.pk).update(status="cancelled")
    assert ingestion.ingest(*claimed) == "lost"
    vs_file.refresh_from_db()
    assert vs_file.status == "cancelled" and texts(vs_file) == []


@contextlib.contextmanager
def chunks_locked_elsewhere():
    """Another connection holds the write lock ingestion needs past this connection's wait for it: SQLite's file
    lock, or PostgreSQL's lock on the chunk table."""
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout = 30000")
        return
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None), params.pop("context", None), params.pop("prepare_threshold", None)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '50ms'")
    try:
        with psycopg.connect(**params) as other:
            other.execute("LOCK TABLE assistants_api_chunk IN EXCLUSIVE MODE")
            yield
            other.rollback()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")


def test_a_locked_database_leaves_the_file_waiting_not_failed():
    """The write lock held elsewhere past the wait: the file is not failed for it, and a later look finishes it."""
    store = vector_stores.create_store({})
    vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("l.txt", b"locked").id)
    claimed = ingestion.claim()
    with chunks_locked_elsewhere():
        assert ingestion.ingest(*claimed) == "retry"
    vs_file.refresh_from_db()
    assert vs_file.status == "in_progress" and vs_file.last_error is None
    with override_settings(BETAASSI_INGEST_LEASE_SECONDS=0.2):
        time.sleep(0.3)  # its lease (the release was locked out too) runs out
        assert ingestion.run_pending() == 1
    vs_file.refresh_from_db()
    assert (vs_file.status, texts(vs_file)) == ("completed", ["locked"])


CLAIMER = """
import os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from betaassi_django.assistants_api.knowledge import ingestion
print("ready", flush=True)
input()
taken = []
while (claimed := ingestion.claim()) is not None:
    taken.append(claimed[0].pk)
print(" ".join(map(str, taken)), flush=True)
"""


def test_two_processes_claiming_at_once_never_take_the_same_file():
    store = vector_stores.create_store({})
    file_id = make_file("c.txt", b"claim").id
    other = [make_file(f"c{i}.txt", b"claim").id for i in range(39)]
    rows = VectorStoreFile.objects.bulk_create([VectorStoreFile(vector_store=store, file_id=f)
                                                for f in [file_id, *other]])
    env = {**os.environ, "DATABASE_URL": shared_database_url()}
    children = [subprocess.Popen([sys.executable, "-c", CLAIMER], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # both start claiming together
            child.stdin.write("go\n")
            child.stdin.flush()
        taken = [set(map(int, child.stdout.readline().split())) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait(30)
    assert not taken[0] & taken[1] and taken[0] | taken[1] == {row.pk for row in rows}


KILLED = """
import os, sys, time, django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from betaassi_django.assistants_api.knowledge import ingestion
vs_file, lease = ingestion.claim()
pieces = ingestion.pieces_of(vs_file)     # parsed and chunked, the lease renewed meanwhile
print("claimed", vs_file.pk, len(pieces), flush=True)
time.sleep(600)                           # killed here, before its result is written
"""


def test_a_process_killed_mid_ingestion_leaves_the_file_to_another():
    store = vector_stores.create_store({})
    vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("k.md", b"# kill me").id,
                                             chunking_strategy={"type": "static", "static": vector_stores.AUTO})
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "BETAASSI_INGEST_LEASE_SECONDS": "3"}
    child = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["claimed", str(vs_file.pk), "1"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    vs_file.refresh_from_db()
    assert vs_file.status == "in_progress" and vs_file.claimed_at is not None
    left = vs_file.claimed_at  # the dead process's last stamp
    with override_settings(BETAASSI_INGEST_LEASE_SECONDS=3):
        deadline = time.monotonic() + 30
        while (claimed := ingestion.claim()) is None:
            if VectorStoreFile.objects.filter(pk=vs_file.pk, status="completed").exists():
                break  # this process's worker thread (started by an earlier test) was first
            assert time.monotonic() < deadline
            time.sleep(0.05)
        else:
            # Taken again only once the lease ran out, then finished here.
            assert (claimed[1].token - left).total_seconds() >= 3
            assert ingestion.ingest(*claimed) == "completed"
    vs_file.refresh_from_db()
    assert (vs_file.status, vs_file.last_error, texts(vs_file)) == ("completed", None, ["# kill me"])


WORKER = """
import os, time, django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from betaassi_django.assistants_api.knowledge import ingestion
ingestion.start()                         # as any vector store request does
print("started", flush=True)
time.sleep(600)
"""


def test_the_worker_of_a_live_process_takes_a_file_whose_lease_ran_out():
    """A process that died just after claiming (its stamp fresh): another process's worker, started before the
    lease ran out, finds the file on a later look of its timer."""
    store = vector_stores.create_store({})
    vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("w.txt", b"orphan").id,
                                             claimed_at=timezone.now())
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "BETAASSI_INGEST_LEASE_SECONDS": "2"}
    child = subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while VectorStoreFile.objects.filter(pk=vs_file.pk, status="in_progress").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    vs_file.refresh_from_db()
    assert (vs_file.status, vs_file.claimed_at, texts(vs_file)) == ("completed", None, ["orphan"])


def test_json_files_are_pretty_printed_before_chunking():
    vs_file = ingested("d.json", json.dumps({"k": "v"}).encode())
    assert texts(vs_file) == ['{\n  "k": "v"\n}']
    lone = ingested("s.json", b'{"a": "x\\ud800y"}')  # a lone surrogate escaped in JSON: stored replaced
    assert (lone.status, texts(lone)) == ("completed", ['{\n  "a": "x\ufffdy"\n}'])


def test_the_ingest_files_command_finishes_what_waits():
    store = vector_stores.create_store({})
    good = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("g.txt", b"good").id)
    bad = VectorStoreFile.objects.create(vector_store=store, file_id=make_file("b.pdf", b"not a pdf").id)
    out = io.StringIO()
    call_command("ingest_files", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{good.file_id} in {store.id}: completed"
    assert lines[1].startswith(f"{bad.file_id} in {store.id}: failed (invalid_file: The file could not be read as a "
                               "PDF")
    assert lines[2:] == ["2 file(s) ingested"]
    out = io.StringIO()
    call_command("ingest_files", stdout=out)
    assert out.getvalue() == "0 file(s) ingested\n"


@pytest.mark.parametrize("deletion", ["store", "store file", "file"])
def test_a_deletion_waits_for_an_ingestion_writing_chunks_and_takes_them_too(deletion):
    """An ingestion holds the file's row while it writes the chunks (``ingestion._store``): a deletion of the store,
    of the file from the store, or of the File then waits for it and deletes the chunks it wrote, instead of
    failing on them at commit (PostgreSQL's foreign key: a 500 before)."""
    import threading

    from django.db import connection, transaction

    from betaassi_django.assistants_api.knowledge import files

    vs_file = ingested("w.txt", b"written before")
    holding, release = threading.Event(), threading.Event()

    def ingestion_writing() -> None:
        try:
            with transaction.atomic():
                VectorStoreFile.objects.select_for_update().get(pk=vs_file.pk)
                Chunk.objects.create(vector_store_file=vs_file, vector_store_id=vs_file.vector_store.id,
                                     file_id=vs_file.file_id, index=1, text="written meanwhile", tokens=2)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=ingestion_writing)
    writer.start()
    assert holding.wait(10)
    threading.Timer(0.3, release.set).start()
    if deletion == "store":
        vector_stores.delete_store(vs_file.vector_store.id)
    elif deletion == "store file":
        vector_stores.delete_store_file(vs_file.vector_store.id, vs_file.file_id)
    else:
        files.delete_file(File.objects.get(id=vs_file.file_id))
    writer.join(10)
    assert not writer.is_alive()
    assert not VectorStoreFile.objects.filter(pk=vs_file.pk).exists()
    assert Chunk.objects.filter(file_id=vs_file.file_id).count() == 0
