"""``POST /v1/vector_stores/{id}/search`` (``http.endpoint`` makes it a view); the search is ``search``.

The body is the specification's ``VectorStoreSearchRequest``. ``query`` may be a string or an array of strings
(searched together, as one query of all their words). ``rewrite_query`` is accepted, but no query is rewritten:
``search_query`` echoes the query as given (a rewrite would need a model call on the request path).
``ranking_options.ranker`` is accepted and changes nothing (there is one ranker); ``score_threshold`` and
``max_num_results`` apply. All results fit one page: ``has_more`` is false, ``next_page`` null. An expired store
is a 400 ``vector_store_expired`` (as adding a file to it is).

Scopes: as the rest of ``/vector_stores``, a key limited to some assistants reaches no store (403); a read-only
key is refused by ``endpoint`` (the search is a POST).
"""

from __future__ import annotations

from django.http import HttpRequest

from .. import scopes
from ..errors import invalid
from ..http import read_body
from . import filters, vector_stores
from .search import search


def search_vector_store(request: HttpRequest, vector_store_id: str) -> dict:
    scopes.check_unassigned(scopes.of_request(request), "vector stores")
    body = read_body(request, "VectorStoreSearchRequest")
    store = vector_stores.get_store(vector_store_id)
    if vector_stores.is_expired(store):
        raise invalid(f"Vector store '{store.id}' has expired: it can no longer be searched.",
                      param="vector_store_id", code="vector_store_expired")
    queries = [body["query"]] if isinstance(body["query"], str) else body["query"]
    if not queries:
        raise invalid("Invalid 'query': expected a string or a non-empty array of strings.", param="query",
                      code="invalid_value")
    if body.get("filters") is not None:
        filters.check(body["filters"])
    options = body.get("ranking_options") or {}
    hits = search([store.id], " ".join(queries), max_num_results=body.get("max_num_results", 10),
                  score_threshold=options.get("score_threshold", 0.0), filters=body.get("filters"))
    vector_stores.touch([store.id])
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [{"file_id": hit.file_id, "filename": hit.filename, "score": hit.score, "attributes": hit.attributes,
                  "content": [{"type": "text", "text": hit.text}]} for hit in hits],
        "has_more": False,
        "next_page": None,
    }
