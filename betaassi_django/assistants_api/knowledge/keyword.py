"""Keyword ranking built into the database: SQLite FTS5 (bm25) or PostgreSQL full-text search (ts_rank_cd).

The user's query never reaches the database as query syntax: it is cut into words here (letters and digits
only, so no quotes, ``NEAR``, ``*``, ``:``, column filters or parentheses survive, nor lone surrogates), and the
match expression is built from those words, each quoted, joined by OR. Scores are the engine's rank ``r``
mapped to [0, 1) by ``r / (r + HALF)``: a chunk that matches the query's words about as well as a typical
single strong match scores about 0.5; the order is the engine's.
"""

from __future__ import annotations

import re

from django.db import connection

#: Words kept from a query (the first ones; a 10 KB query is cut, not refused), and their longest length.
MAX_WORDS = 32
MAX_WORD_CHARS = 64
WORD = re.compile(r"[^\W_]+")
#: Common English words dropped from a query that has other words (PostgreSQL's ``english`` drops them too;
#: FTS5 has no stop words, and ORing "the" would rank every chunk).
_STOP = ("a an and are as at be but by for from has have how i if in into is it its of on or so that the their then "
         "there these they this to was we what when where which who why will with you your do does did can")
STOP_WORDS = frozenset(_STOP.split())
#: The rank that maps to a score of 0.5, per engine (see the module's docstring).
HALF = {"sqlite": 5.0, "postgresql": 0.1}


def words(query: str) -> list[str]:
    """The query's searchable words, lowercased, deduplicated, in order; stop words dropped unless only they are
    left."""
    found = list(dict.fromkeys(w.lower()[:MAX_WORD_CHARS] for w in WORD.findall(query)))
    kept = [w for w in found if w not in STOP_WORDS] or found
    return kept[:MAX_WORDS]


def _scope(eligible: list[int] | None) -> tuple[str, list]:
    """The SQL restricting chunks to completed files (``eligible``: the vector store files' seqs allowed, when a
    filter chose them)."""
    if eligible is None:  # a primary-key lookup per matching chunk
        return ("EXISTS (SELECT 1 FROM assistants_api_vectorstorefile v WHERE v.seq = c.vector_store_file_id "
                "AND v.status = 'completed')"), []
    if not eligible:
        return "1 = 0", []
    return f"c.vector_store_file_id IN ({', '.join(['%s'] * len(eligible))})", list(eligible)


def ranked(vector_store_ids: list[str], query: str, limit: int, eligible: list[int] | None = None
           ) -> list[tuple[int, float]]:
    """``(chunk id, score)`` of the best ``limit`` chunks for ``query``, best first."""
    terms = words(query)
    if not terms or not vector_store_ids or limit <= 0:
        return []
    stores = ", ".join(["%s"] * len(vector_store_ids))
    scope, scope_params = _scope(eligible)
    vendor = connection.vendor
    if vendor == "sqlite":
        sql = (f"SELECT c.id, -bm25(assistants_api_chunk_fts) AS r FROM assistants_api_chunk_fts "
               f"JOIN assistants_api_chunk c ON c.id = assistants_api_chunk_fts.rowid "
               f"WHERE assistants_api_chunk_fts MATCH %s AND c.vector_store_id IN ({stores}) AND {scope} "
               f"ORDER BY r DESC, c.id LIMIT %s")
        match = " OR ".join(f'"{term}"' for term in terms)
        params = [match, *vector_store_ids, *scope_params, limit]
    else:  # PostgreSQL (the two databases the app supports)
        # The matches first (MATERIALIZED): the planner then takes the GIN index for the query, or the store's
        # index when the store is small, rather than walking every chunk of every completed file; the tsquery is
        # a constant so that it can weigh the two (with the table's statistics, which autovacuum keeps).
        sql = (f"WITH c AS MATERIALIZED (SELECT id, vector_store_file_id, "
               f"ts_rank_cd(search_vector, to_tsquery('english', %s)) AS r FROM assistants_api_chunk "
               f"WHERE search_vector @@ to_tsquery('english', %s) AND vector_store_id IN ({stores})) "
               f"SELECT c.id, c.r FROM c WHERE {scope} ORDER BY c.r DESC, c.id LIMIT %s")
        match = " | ".join(f"'{term}'" for term in terms)
        params = [match, match, *vector_store_ids, *scope_params, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    half = HALF["sqlite" if vendor == "sqlite" else "postgresql"]
    return [(chunk_id, max(0.0, r) / (max(0.0, r) + half)) for chunk_id, r in rows]

