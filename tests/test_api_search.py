"""``POST /v1/vector_stores/{id}/search`` through the openai SDK, in-process and over HTTP, every response
validated against the specification: ordering, limits, thresholds, filters, hostile queries, refusals, scopes."""

from __future__ import annotations

import json
import time

import openai
import pytest

from betaassi_django.assistants_api.models import VectorStore
from tests.conftest import in_process_client
from tests.fake_upstream import FakeUpstream, Status
from tests.test_api_scopes import key_client, refused

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"poll_interval_ms": 20, "max_wait_seconds": 60}
DOCS = {
    "returns.txt": (b"Our return policy: items may be returned within 30 days for a full refund.",
                    {"team": "sales", "year": 2024}),
    "shipping.txt": (b"Standard shipping takes five business days. Express shipping takes two days.",
                     {"team": "logistics", "year": 2023}),
    "warranty.txt": (b"The warranty covers manufacturing defects for two years. Returns of defective items are free.",
                     {"team": "sales", "year": 2022}),
    "bread.md": (b"To bake bread, mix flour, water, salt and yeast.", None),
}


@pytest.fixture
def shop(client) -> tuple[openai.OpenAI, str]:
    store = client.vector_stores.create(name="shop")
    for name, (data, attributes) in DOCS.items():
        file_id = client.files.create(file=(name, data), purpose="assistants").id
        done = client.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id=store.id,
                                                          attributes=attributes, **FAST)
        assert done.status == "completed", done.last_error
    return client, store.id


def found(page) -> list[str]:
    return [item.filename for item in page.data]


def test_search_answers_the_best_chunks_first(shop):
    client, store_id = shop
    page = client.vector_stores.search(store_id, query="What is the return policy?")
    assert found(page) == ["returns.txt", "warranty.txt"]
    first = page.data[0]
    assert first.content[0].model_dump() == {"type": "text", "text": DOCS["returns.txt"][0].decode()}
    assert first.attributes == {"team": "sales", "year": 2024} and first.file_id.startswith("file-")
    assert 1 > page.data[0].score > page.data[1].score > 0
    raw = client.vector_stores.with_raw_response.search(store_id, query="express shipping").http_response.json()
    assert raw["object"] == "vector_store.search_results.page" and raw["search_query"] == ["express shipping"]
    assert (raw["has_more"], raw["next_page"], [item["filename"] for item in raw["data"]]) == (
        False, None, ["shipping.txt"])
    assert client.vector_stores.search(store_id, query="submarine").data == []


def test_limits_thresholds_filters_and_query_arrays(shop):
    client, store_id = shop
    both = client.vector_stores.search(store_id, query="return policy").data
    assert found(client.vector_stores.search(store_id, query="return policy", max_num_results=1)) == ["returns.txt"]
    middle = (both[0].score + both[1].score) / 2
    assert found(client.vector_stores.search(store_id, query="return policy",
                                             ranking_options={"score_threshold": middle, "ranker": "auto"})) == [
        "returns.txt"]
    assert found(client.vector_stores.search(store_id, query="return policy",
                                             filters={"type": "lt", "key": "year", "value": 2024})) == [
        "warranty.txt"]
    compound = {"type": "or", "filters": [{"type": "eq", "key": "team", "value": "logistics"},
                                          {"type": "and", "filters": [{"type": "in", "key": "year",
                                                                       "value": [2022, 2030]}]}]}
    assert set(found(client.vector_stores.search(store_id, query="return shipping bread", filters=compound))) == {
        "shipping.txt", "warranty.txt"}
    page = client.vector_stores.search(store_id, query=["bread", "express"], rewrite_query=True)
    assert set(found(page)) == {"bread.md", "shipping.txt"} and page.search_query == ["bread", "express"]


@pytest.mark.parametrize("query", ['"', "NEAR(a b)", "text:foo*", "((a", "x" * 10240, "",
                                   "'; DROP TABLE assistants_api_chunk; --", "AND OR NOT"])
def test_hostile_queries_are_answered(shop, query):
    client, store_id = shop
    page = client.vector_stores.search(store_id, query=query)
    assert page.search_query == [query]
    assert "returns.txt" in found(client.vector_stores.search(store_id, query=f"{query} refund"))


def test_a_lone_surrogate_is_400_naming_the_query(shop):
    client, store_id = shop  # JSON can carry it escaped; the SDK cannot encode it, so the body is sent as bytes
    for query, param in (('"\\ud800"', "query"), ('"a\\udfff refund"', "query"), ('["ok", "\\ud800"]', "query[1]")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.post(f"/vector_stores/{store_id}/search", content=f'{{"query": {query}}}'.encode(),
                        cast_to=object, options={"headers": {"Content-Type": "application/json"}})
        assert caught.value.response.json()["error"]["param"] == param


def test_a_deleted_file_is_gone_from_results(shop):
    client, store_id = shop
    returns = next(f.id for f in client.vector_stores.files.list(store_id) if f.attributes == {"team": "sales",
                                                                                              "year": 2024})
    client.vector_stores.files.delete(returns, vector_store_id=store_id)
    assert found(client.vector_stores.search(store_id, query="return policy refund")) == ["warranty.txt"]


@pytest.mark.parametrize(("body", "param"), [
    ({"query": "x", "max_num_results": 0}, "max_num_results"),
    ({"query": "x", "max_num_results": 51}, "max_num_results"),
    ({"query": "x", "max_num_results": 10 ** 40}, "max_num_results"),
    ({"query": "x", "ranking_options": {"score_threshold": 1.5}}, "ranking_options.score_threshold"),
    ({"query": "x", "ranking_options": {"ranker": "best"}}, "ranking_options.ranker"),
    ({"query": []}, "query"),
    ({"query": "nul\x00"}, "query"),
    ({"query": 7}, "query"),
    ({}, "query"),
    ({"query": "x", "filters": {"type": "in", "key": "k", "value": "a"}}, "filters.value"),
    ({"query": "x", "filters": {"type": "eq", "key": "k", "value": ["a"]}}, "filters.value"),
    ({"query": "x", "filters": {"type": "and", "filters": [{"type": "or", "filters": [
        {"type": "nin", "key": "k", "value": 3}]}]}}, "filters.filters[0].filters[0].value"),
    ({"query": "x", "filters": {"type": "and", "filters": [{"type": "between", "key": "k", "value": 1}]}},
     "filters.filters[0]"),
    ({"query": "x", "rewrite_query": "yes"}, "rewrite_query"),
    ({"query": "x", "unknown": 1}, "unknown"),
])
def test_bad_bodies_are_400_naming_the_param(shop, body, param):
    client, store_id = shop
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/vector_stores/{store_id}/search", body=body, cast_to=object)
    assert caught.value.response.json()["error"]["param"] == param


def test_deep_filters_are_400(shop):
    client, store_id = shop
    node = {"type": "eq", "key": "k", "value": 1}
    for _ in range(200):
        node = {"type": "and", "filters": [node]}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/vector_stores/{store_id}/search", body={"query": "x", "filters": node}, cast_to=object)
    assert caught.value.response.json()["error"]["code"] == "nesting_too_deep"


@pytest.mark.parametrize("store_id", ["vs_unknown", "asst_abc", "file-abc", "x" * 300])
def test_an_unknown_store_is_404(client, store_id):
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.search(store_id, query="x")
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"


def test_searching_refreshes_last_active_at(shop):
    client, store_id = shop
    before = client.vector_stores.retrieve(store_id).last_active_at
    client.vector_stores.search(store_id, query="bread")
    assert client.vector_stores.retrieve(store_id).last_active_at >= before


def test_scopes(daphne_server):
    full = key_client(daphne_server)
    store = full.vector_stores.create(name="scoped")
    assert full.vector_stores.search(store.id, query="anything").data == []
    refused(lambda: key_client(daphne_server, "--read-only").vector_stores.search(store.id, query="x"),
            "You have insufficient permissions for this operation: this API key is read-only (GET requests only).")
    assistant = full.beta.assistants.create(model="m")
    limited = key_client(daphne_server, "--assistant", assistant.id)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        limited.vector_stores.search(store.id, query="x")
    assert "vector stores belong to no assistant" in json.dumps(caught.value.response.json())


def test_an_expired_store_is_400():
    client = in_process_client()
    store = client.vector_stores.create(name="old", expires_after={"anchor": "last_active_at", "days": 1})
    VectorStore.objects.filter(id=store.id).update(expires_at=int(time.time()) - 1)
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.search(store.id, query="x")
    assert caught.value.response.json()["error"] == {
        "message": f"Vector store '{store.id}' has expired: it can no longer be searched.",
        "type": "invalid_request_error", "param": "vector_store_id", "code": "vector_store_expired"}


def test_hybrid_search_end_to_end_finds_a_paraphrase(settings):
    """Ingestion embeds the chunks through the fake upstream's /embeddings; the search embeds the query."""
    with FakeUpstream() as fake:
        settings.BETAASSI_EMBEDDINGS_MODEL = "text-embedding-3-small"
        settings.BETAASSI_UPSTREAM_BASE_URL = fake.base_url
        settings.BETAASSI_UPSTREAM_API_KEY = "sk-upstream-test"
        client = in_process_client()
        store = client.vector_stores.create(name="garage")
        for name, text in (("car.txt", b"Automobile maintenance: change the engine oil every 10,000 kilometres."),
                           ("doctor.txt", b"Book an appointment with a physician at the clinic on weekdays.")):
            file_id = client.files.create(file=(name, text), purpose="assistants").id
            done = client.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id=store.id, **FAST)
            assert done.status == "completed", done.last_error
        page = client.vector_stores.search(store.id, query="How often should my car be serviced?")
        assert page.data[0].filename == "car.txt" and page.data[0].score == 1.0
        assert len(fake.bodies("/embeddings")) == 3  # two files, one query
        fake.embeddings_failure = Status(500, "down")
        # The query cannot be embedded: keyword search only (no word in common), not an error.
        assert client.vector_stores.search(store.id, query="How often should my car be serviced?").data == []
    assert fake.violations == []
