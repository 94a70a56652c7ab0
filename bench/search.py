"""Issue 18: search over vector stores at 10,000 chunks, keyword and hybrid, against a plain SQL ``LIKE`` scan.

On a scratch database of the kind ``DATABASE_URL`` names:

- ingestion: 20 text documents of 10 pages (a page: 3,000 characters) through the app's ingestion
  (``ingestion.run_pending``: parse, chunk at 800/400 tokens, index), keyword only and with embeddings; pages/s.
- one store of 10,000 chunks (``bench/search_data.py``'s filler, 200 files of ~50 chunks of ~250 words, and the
  30 labelled documents), written through ``index.add`` with embeddings from the tests' fake upstream (its own
  process, ``tests/fake_embeddings.py``'s vectors, 256 dimensions); on PostgreSQL then ``ANALYZE`` (what
  autovacuum does within a minute of such inserts: without statistics the planner skips the GIN index).
- latency, p50/p99, of the labelled queries, in alternating blocks: the floor (``LIKE``/``ILIKE`` of every query
  word, the 10 chunks matching most of them: a scan, no index), keyword (``search.search`` with no embeddings
  model: FTS5 or tsvector) and hybrid (with the model: the query's embedding over loopback, the cached matrix,
  rank fusion). Ratio: the path's p50 over the floor's (below 1: faster than the floor). The floor is timed on
  the 30 queries once (beside keyword), keyword and hybrid on ``max(60, BENCH_N // 2)`` queries each.
- recall@5 of each path on the labelled set (``bench/data/search_labelled.json``): keyword-form and paraphrase
  queries apart.
"""

from __future__ import annotations

import statistics
import time

from django.core.files.base import ContentFile
from django.db import connection
from django.test import override_settings

from .report import Timing, add
from .search_data import chunk, load
from .upstream import _fake_upstream

NAME = "search"
CHUNKS = 10_000
FILES = 200
PAGE_CHARS = 3000
DOCS, PAGES = 20, 10
RESULTS = 10
BLOCK = 10
#: The floor (a scan: up to a second a query on PostgreSQL) is timed in the first blocks only: each query once.
FLOOR_BLOCKS = 3


def _hybrid_settings(base_url: str):
    return override_settings(BETAASSI_EMBEDDINGS_MODEL="text-embedding-3-small", BETAASSI_EMBEDDINGS_DIMENSIONS=256,
                             BETAASSI_UPSTREAM_BASE_URL=base_url, BETAASSI_UPSTREAM_API_KEY="bench",
                             BETAASSI_UPSTREAM_MAX_RETRIES=0)


def _ingest(label: str) -> float:
    """Pages per second through the app's ingestion."""
    from betaassi_django.assistants_api.knowledge import files, ingestion
    from betaassi_django.assistants_api.models import VectorStore, VectorStoreFile

    store = VectorStore.objects.create(name=f"bench ingestion {label}")
    rows = []
    for doc in range(DOCS):
        text, n = "", doc * 1000
        while len(text) < PAGES * PAGE_CHARS:
            text += chunk(n, 80) + "\n\n"
            n += 1
        data = text[: PAGES * PAGE_CHARS].encode()
        file = files.create_file(ContentFile(data, name=f"doc-{doc}.txt"), "assistants")
        rows.append(VectorStoreFile(vector_store=store, file_id=file.id))
    VectorStoreFile.objects.bulk_create(rows)
    start = time.perf_counter()
    ingestion.run_pending()
    elapsed = time.perf_counter() - start
    statuses = set(VectorStoreFile.objects.filter(vector_store=store).values_list("status", flat=True))
    if statuses != {"completed"}:
        raise RuntimeError(f"the benchmark's ingestion ended {statuses}")
    return DOCS * PAGES / elapsed


def _corpus() -> tuple[str, dict[str, str]]:
    """The 10,000-chunk store (with embeddings); its id and the labelled documents' file ids by name."""
    from betaassi_django.assistants_api import tokens
    from betaassi_django.assistants_api.knowledge import index
    from betaassi_django.assistants_api.models import File, VectorStore, VectorStoreFile

    store = VectorStore.objects.create(name="bench search")
    labelled = load()
    filler = CHUNKS - len(labelled)
    per_file = -(-filler // FILES)
    docs = [(f"filler-{f:03d}.txt", [chunk(n) for n in range(f * per_file, min(filler, (f + 1) * per_file))])
            for f in range(FILES)]
    docs += [(item["doc"], [item["text"]]) for item in labelled]
    ids = {}
    for name, texts in docs:
        file = File.objects.create(filename=name, purpose="assistants", bytes=sum(map(len, texts)))
        vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=file.id, status="completed")
        index.add(vs_file, [(text, tokens.count(text)) for text in texts])
        ids[name] = file.id
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the statistics autovacuum gathers after such inserts, now
            cursor.execute("ANALYZE")
    return store.id, ids


def _like(store_id: str, query: str) -> list[str]:
    """The floor: chunks containing most of the query's words by ``LIKE``, a full scan."""
    from betaassi_django.assistants_api.knowledge.keyword import words

    terms = words(query)
    if not terms:
        return []
    op = "LIKE" if connection.vendor == "sqlite" else "ILIKE"
    matched = " + ".join([f"(CASE WHEN text {op} %s THEN 1 ELSE 0 END)"] * len(terms))
    sql = (f"SELECT file_id FROM (SELECT file_id, id, {matched} AS m FROM assistants_api_chunk "
           f"WHERE vector_store_id = %s) AS s WHERE m > 0 ORDER BY m DESC, id LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(f"%{term}%" for term in terms), store_id, RESULTS])
        return [row[0] for row in cursor.fetchall()]


def _search(store_id: str, query: str) -> list[str]:
    from betaassi_django.assistants_api.knowledge.search import search

    return [hit.file_id for hit in search([store_id], query, max_num_results=RESULTS)]


def _recall(found: dict[str, list[str]], ids: dict[str, str], labelled: list[dict], kind: str) -> str:
    items = [item for item in labelled if item["kind"] == kind]
    hits = sum(ids[item["doc"]] in found[item["query"]][:5] for item in items)
    return f"{hits}/{len(items)}"


def run(n: int) -> None:
    from betaassi_django import conf
    from betaassi_django.assistants_api.knowledge import embeddings

    labelled = load()
    queries = [item["query"] for item in labelled]
    samples = max(60, n // 2)
    with _fake_upstream() as base_url:
        keyword_rate = _ingest("keyword")
        with _hybrid_settings(base_url):
            hybrid_rate = _ingest("hybrid")
            start = time.perf_counter()
            store_id, ids = _corpus()
            built = time.perf_counter() - start
        add(NAME, "ingestion (parse, chunk, keyword index)", f"{keyword_rate:7.1f} pages/s",
            target="pages of 3,000 characters, through ingestion.run_pending")
        add(NAME, "ingestion (+ embeddings, fake upstream)", f"{hybrid_rate:7.1f} pages/s",
            f"{hybrid_rate / keyword_rate:.2f}x")
        add(NAME, f"{CHUNKS:,} chunks via index.add (+ embeddings)", f"{CHUNKS / built:7.0f} chunks/s")

        timings = {"LIKE scan (floor)": Timing(), "keyword": Timing(), "hybrid": Timing()}
        found: dict[str, dict[str, list[str]]] = {path: {} for path in timings}
        first_hybrid = None
        paths = {"LIKE scan (floor)": lambda q: _like(store_id, q), "keyword": lambda q: _search(store_id, q)}
        for block in range(-(-samples // BLOCK)):
            order = ["floor-and-keyword", "hybrid"] if block % 2 else ["hybrid", "floor-and-keyword"]
            batch = [queries[(block * BLOCK + i) % len(queries)] for i in range(BLOCK)]
            for part in order:
                if part == "hybrid":
                    with _hybrid_settings(base_url):
                        conf.get()
                        embeddings.client()
                        for query in batch:
                            start = time.perf_counter()
                            found["hybrid"][query] = _search(store_id, query)
                            elapsed = time.perf_counter() - start
                            if first_hybrid is None:
                                first_hybrid = elapsed  # reads the store's 10,000 vectors into the cache
                            else:
                                timings["hybrid"].samples.append(elapsed)
                    continue
                conf.get()
                for query in batch:
                    for path, call in paths.items():
                        if path != "keyword" and block >= FLOOR_BLOCKS:
                            continue
                        start = time.perf_counter()
                        found[path][query] = call(query)
                        timings[path].samples.append(time.perf_counter() - start)
    floor = timings["LIKE scan (floor)"]
    for path, timing in timings.items():
        recall = (f"recall@5 keyword-form {_recall(found[path], ids, labelled, 'keyword')}, "
                  f"paraphrases {_recall(found[path], ids, labelled, 'paraphrase')}")
        figure = f"p50 {timing.p50_ms:7.2f} ms  p99 {timing.p99_ms:7.2f} ms; {recall}"
        ratio = "" if timing is floor else f"{timing.p50_ms / floor.p50_ms:.2f}x"
        add(NAME, f"{path} at {CHUNKS:,} chunks", figure, ratio, "p50 vs the floor's" if ratio else "")
    add(NAME, "hybrid: first query (loads the store's vectors)", f"{first_hybrid * 1000:7.1f} ms")
    print(f"bench: search: {len(timings['keyword'].samples)} queries per path, "
          f"mean keyword {statistics.mean(timings['keyword'].samples) * 1000:.2f} ms", flush=True)
