"""Search over vector stores (knowledge.search): keyword ranking in the database, filters, limits, hostile
queries, the keyword index following deletes and updates, and hybrid search with the fake upstream's embeddings.

Stores are built here from rows (``index.add`` is what ingestion calls), so these tests do not depend on parsing
or chunking; the API tests are in test_api_search.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from betaassi_django.assistants_api import tokens
from betaassi_django.assistants_api.knowledge import embeddings, index, vectors
from betaassi_django.assistants_api.knowledge.search import RRF_K, fuse, search
from betaassi_django.assistants_api.models import Chunk, File, VectorStore, VectorStoreFile
from tests import fake_embeddings
from tests.fake_upstream import FakeUpstream, Status

pytestmark = pytest.mark.django_db

SHOP = [
    ("returns.txt", ["Our return policy: items may be returned within 30 days for a full refund."],
     {"team": "sales", "year": 2024, "public": True}),
    ("shipping.txt", ["Standard shipping takes five business days. Express shipping takes two days."],
     {"team": "logistics", "year": 2023, "public": True}),
    ("warranty.txt", ["The warranty covers manufacturing defects for two years.",
                      "Returns of defective items are free of charge."],
     {"team": "sales", "year": 2022, "public": False}),
    ("bread.md", ["To bake bread, mix flour, water, salt and yeast."], None),
]
HOSTILE = ['"', '""', "'", "NEAR(a b)", "a NEAR b", "NEAR", "*", "foo*", "text:foo", "col:", "(", ")", "((a)",
           "a AND", "OR", "NOT", "AND OR NOT", "^foo", "-foo", "+", "\ud800", "a\ud800b", "x" * 10240,
           "word " * 3000, "", "   ", "\x00", "&|!():*<>", "'; DROP TABLE assistants_api_chunk; --", "\\", "{a b}",
           "ŝtrange ünïcode ⅓ ² ﬁ", "😀 ❤", "a" * 5000, "_", "__init__", "1e999", "-1", "\u200b", "'return'"]


def make_store(docs, *, status: str = "completed", store: VectorStore | None = None) -> VectorStore:
    store = store or VectorStore.objects.create(name="shop")
    for filename, texts, attributes in docs:
        file = File.objects.create(filename=filename, purpose="assistants", bytes=sum(map(len, texts)))
        vs_file = VectorStoreFile.objects.create(vector_store=store, file_id=file.id, status=status,
                                                 attributes=attributes)
        index.add(vs_file, [(text, tokens.count(text)) for text in texts])
    return store


def names(hits) -> list[str]:
    return [hit.filename for hit in hits]


@pytest.fixture
def shop() -> VectorStore:
    return make_store(SHOP)


def test_keyword_ranking_is_best_first_with_scores_in_0_1(shop):
    hits = search([shop.id], "What is the return policy?")
    assert names(hits) == ["returns.txt", "warranty.txt"]
    assert [hit.chunk_index for hit in hits] == [0, 1]
    assert hits[0].text == SHOP[0][1][0] and hits[1].text == SHOP[2][1][1]
    assert hits[0].attributes == {"team": "sales", "year": 2024, "public": True}
    assert 1 > hits[0].score > hits[1].score > 0
    assert names(search([shop.id], "express shipping")) == ["shipping.txt"]
    assert search([shop.id], "submarine") == []


def test_score_threshold_and_max_num_results(shop):
    first, second = search([shop.id], "return policy")
    assert names(search([shop.id], "return policy", score_threshold=(first.score + second.score) / 2)) == [
        "returns.txt"]
    assert names(search([shop.id], "return policy", score_threshold=second.score)) == ["returns.txt",
                                                                                      "warranty.txt"]
    assert search([shop.id], "return policy", score_threshold=1.0) == []
    assert names(search([shop.id], "return policy", max_num_results=1)) == ["returns.txt"]
    many = make_store([(f"note{n}.txt", [f"note number {n} about llamas"], None) for n in range(60)])
    assert len(search([many.id], "llamas", max_num_results=50)) == 50


@pytest.mark.parametrize(("filters", "expected"), [
    ({"type": "eq", "key": "team", "value": "sales"}, ["returns.txt", "warranty.txt"]),
    ({"type": "ne", "key": "team", "value": "sales"}, ["shipping.txt", "bread.md"]),
    ({"type": "gt", "key": "year", "value": 2022}, ["returns.txt", "shipping.txt"]),
    ({"type": "gte", "key": "year", "value": 2023}, ["returns.txt", "shipping.txt"]),
    ({"type": "lt", "key": "year", "value": 2024}, ["shipping.txt", "warranty.txt"]),
    ({"type": "lte", "key": "year", "value": 2022}, ["warranty.txt"]),
    ({"type": "lt", "key": "team", "value": "m"}, ["shipping.txt"]),
    ({"type": "in", "key": "team", "value": ["logistics", "hr"]}, ["shipping.txt"]),
    ({"type": "nin", "key": "team", "value": ["logistics", "hr"]}, ["returns.txt", "warranty.txt", "bread.md"]),
    ({"type": "eq", "key": "public", "value": True}, ["returns.txt", "shipping.txt"]),
    ({"type": "eq", "key": "public", "value": 1}, []),
    ({"type": "eq", "key": "year", "value": "2024"}, []),
    ({"type": "gt", "key": "year", "value": "2000"}, []),
    ({"type": "and", "filters": [{"type": "eq", "key": "team", "value": "sales"},
                                 {"type": "gte", "key": "year", "value": 2023}]}, ["returns.txt"]),
    ({"type": "or", "filters": [{"type": "eq", "key": "team", "value": "logistics"},
                                {"type": "and", "filters": [{"type": "eq", "key": "public", "value": False}]}]},
     ["shipping.txt", "warranty.txt"]),
    ({"type": "or", "filters": []}, []),
    ({"type": "and", "filters": []}, ["returns.txt", "shipping.txt", "warranty.txt", "bread.md"]),
])
def test_filters_choose_files_by_attributes(shop, filters, expected):
    # One query that every file answers, so the filter alone decides.
    query = "return shipping warranty bread"
    found = {hit.filename for hit in search([shop.id], query, filters=filters)}
    assert found == set(expected)


def test_only_completed_files_of_the_given_stores(shop):
    other = make_store([("other.txt", ["Another store's return policy."], None)])
    make_store([("pending.txt", ["A pending return policy."], None)], status="in_progress", store=shop)
    make_store([("failed.txt", ["A failed return policy."], None)], status="failed", store=shop)
    assert "pending.txt" not in names(search([shop.id], "return policy"))
    assert set(names(search([shop.id], "return policy"))) == {"returns.txt", "warranty.txt"}
    assert names(search([other.id], "return policy")) == ["other.txt"]
    assert set(names(search([shop.id, other.id], "return policy"))) == {"returns.txt", "warranty.txt", "other.txt"}
    assert search(["vs_unknown"], "return policy") == []
    assert search([], "return policy") == []


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(shop, query):
    hits = search([shop.id], query)
    assert all(0 <= hit.score <= 1 for hit in hits)
    # The same text beside a real word still finds it: the query's syntax is never the engine's.
    assert "returns.txt" in names(search([shop.id], f"{query} refund"))


def test_an_array_of_words_longer_than_the_cut_is_searched_by_its_first_words(shop):
    assert search([shop.id], " ".join(f"w{n}" for n in range(100)) + " refund") == []
    assert names(search([shop.id], "refund " + " ".join(f"w{n}" for n in range(100)))) == ["returns.txt"]


def _index_rows(word: str) -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT COUNT(*) FROM assistants_api_chunk_fts WHERE assistants_api_chunk_fts MATCH %s",
                           [f'"{word}"'])
        else:
            cursor.execute("SELECT COUNT(*) FROM assistants_api_chunk WHERE search_vector @@ to_tsquery('english', %s)",
                           [word])
        return cursor.fetchone()[0]


def test_the_keyword_index_follows_deletes_and_updates(shop):
    assert _index_rows("refund") == 1
    returns = VectorStoreFile.objects.get(vector_store=shop, file_id=File.objects.get(filename="returns.txt").id)
    returns.delete()  # the chunks go by cascade
    assert _index_rows("refund") == 0
    assert names(search([shop.id], "return policy")) == ["warranty.txt"]
    Chunk.objects.filter(vector_store_id=shop.id, text__startswith="To bake").update(text="Zebras cross the road.")
    assert names(search([shop.id], "zebra")) == ["bread.md"]
    assert search([shop.id], "bread flour") == []
    shop.delete()
    assert _index_rows("zebra") == 0 and _index_rows("warranty") == 0


def test_text_no_database_keeps_is_cleaned(shop):
    make_store([("odd.txt", ["nul\x00byte and a lone \ud800 surrogate quokka"], None)], store=shop)
    (hit,) = search([shop.id], "quokka")
    assert hit.text == "nulbyte and a lone ? surrogate quokka"


def test_fuse_is_reciprocal_rank_fusion_normalised():
    assert fuse([], []) == []
    assert fuse([(1, 0.9), (2, 0.1)]) == [(1, 1.0), (2, pytest.approx((RRF_K + 1) / (RRF_K + 2)))]
    fused = dict(fuse([(1, 0.9), (2, 0.5)], [(2, 0.8), (3, 0.7)]))
    best = 2 / (RRF_K + 1)
    assert fused == pytest.approx({1: 1 / (RRF_K + 1) / best, 2: (1 / (RRF_K + 2) + 1 / (RRF_K + 1)) / best,
                                   3: 1 / (RRF_K + 2) / best})
    assert max(fused, key=fused.get) == 2


# -- hybrid: the fake upstream's embeddings ---------------------------------------------------------------------

CARS = [
    ("car.txt", ["Automobile maintenance: change the engine oil every 10,000 kilometres."], None),
    ("doctor.txt", ["Book an appointment with a physician at the clinic on weekdays."], None),
    ("bread.md", ["To bake bread, mix flour, water, salt and yeast."], None),
]


@pytest.fixture
def fake():
    with FakeUpstream() as upstream:
        yield upstream
    assert upstream.violations == []


@pytest.fixture
def hybrid(settings, fake) -> FakeUpstream:
    settings.BETAASSI_EMBEDDINGS_MODEL = "text-embedding-3-small"
    settings.BETAASSI_EMBEDDINGS_DIMENSIONS = 64
    settings.BETAASSI_UPSTREAM_BASE_URL = fake.base_url
    settings.BETAASSI_UPSTREAM_API_KEY = "sk-upstream-test"
    settings.BETAASSI_UPSTREAM_MAX_RETRIES = 0
    return fake


def test_chunks_are_embedded_in_batches_as_float32(hybrid):
    store = make_store(CARS)
    sent = hybrid.bodies("/embeddings")
    assert len(sent) == 3  # one request per file here
    assert sent[0] == {"model": "text-embedding-3-small", "input": [CARS[0][1][0]], "dimensions": 64,
                    "encoding_format": "base64"}
    chunk = Chunk.objects.get(vector_store_id=store.id, file_id=File.objects.get(filename="car.txt").id)
    stored = np.frombuffer(chunk.embedding, dtype="<f4")
    assert stored.shape == (64,)
    assert np.allclose(stored, fake_embeddings.vector(CARS[0][1][0], 64), atol=1e-6)
    pieces = [(f"piece {n}", 100_000) for n in range(5)]  # 500,000 tokens: two requests at most 250,000 each
    assert len(index.embed_pieces(pieces)) == 5
    assert [len(body["input"]) for body in hybrid.bodies("/embeddings")[-3:]] == [2, 2, 1]


def test_semantic_search_finds_paraphrases_that_keywords_miss(hybrid, settings):
    store = make_store(CARS)
    query = "How often should my car be serviced?"
    hits = search([store.id], query)
    assert names(hits)[0] == "car.txt"
    assert hits[0].score == pytest.approx(1.0)  # first of the one list that found anything
    settings.BETAASSI_EMBEDDINGS_MODEL = ""
    assert search([store.id], query) == []  # no word in common


def test_hybrid_scores_fuse_both_rankings(hybrid):
    store = make_store(CARS)
    hits = search([store.id], "automobile engine oil")
    assert names(hits)[0] == "car.txt" and hits[0].score == pytest.approx(1.0)  # first in both lists
    assert all(hit.score < 1.0 for hit in hits[1:])
    assert names(search([store.id], "automobile engine oil", max_num_results=1)) == ["car.txt"]
    hits = search([store.id], "physician", filters={"type": "eq", "key": "missing", "value": 1})
    assert hits == []


def test_a_failing_embeddings_endpoint_fails_indexing_and_searches_by_keyword(hybrid, settings):
    store = make_store(CARS)
    hybrid.embeddings_failure = Status(503, "The model is down.")
    with pytest.raises(index.IndexingError, match="answered 503: The model is down"):
        make_store([("new.txt", ["A new automobile."], None)], store=store)
    assert names(search([store.id], "automobile")) == ["car.txt"]  # keyword only, no error


def test_the_vector_cache_sees_added_and_deleted_chunks(hybrid):
    store = make_store(CARS[:1])
    assert names(search([store.id], "vehicle")) == ["car.txt"]
    make_store(CARS[1:2], store=store)
    assert "doctor.txt" in names(search([store.id], "physician doctor"))
    VectorStoreFile.objects.filter(vector_store=store, file_id=File.objects.get(filename="car.txt").id).delete()
    assert "car.txt" not in names(search([store.id], "vehicle"))
    key_count = len(vectors._cache)
    assert key_count >= 1
    assert embeddings.enabled()


@pytest.mark.parametrize("query", ["", "!!!", "\ud800", "x" * 10240, "word " * 3000, "NEAR(a b)", "\x00"])
def test_hostile_queries_in_hybrid_search(hybrid, query):
    store = make_store(CARS)
    hits = search([store.id], query)
    assert all(0 <= hit.score <= 1 for hit in hits)
    assert names(search([store.id], f"{query} automobile"))[0] == "car.txt"


def test_the_vector_cache_keeps_recent_stores_within_its_bound(hybrid, monkeypatch):
    stores = [make_store([(f"car{n}.txt", [f"Automobile number {n}."], None)]) for n in range(3)]
    monkeypatch.setattr(vectors, "MAX_CACHE_BYTES", 1)  # room for the last store loaded only
    vectors._cache.clear()
    for n, store in enumerate(stores):
        assert names(search([store.id], "vehicle")) == [f"car{n}.txt"]
    assert [store_id for _, store_id in vectors._cache] == [stores[-1].id]
    monkeypatch.setattr(vectors, "MAX_CACHE_BYTES", 10 ** 9)
    for store in stores:
        search([store.id], "vehicle")
    assert [store_id for _, store_id in vectors._cache] == [store.id for store in stores]  # the last one moved up
