"""The keyword index over chunks' text, built into each database (docs/knowledge.md, "Search").

- SQLite: an FTS5 table with external content (the chunk table; the index keeps only the terms), porter-stemmed,
  kept right by triggers on insert, delete and update, so a cascade from a file or a store cleans it by itself.
  A later migration that makes SQLite rebuild the chunk table (Django's ALTER TABLE by copy) drops these
  triggers with the old table: it must run ``SQLITE[0]`` again (the triggers part).
- PostgreSQL: a stored generated ``tsvector`` column (``english`` configuration) with a GIN index: ranking reads
  the stored vector rather than parsing every matching chunk again. Django does not know the column (it is not a
  model field); the database fills it.
"""

from django.db import migrations

SQLITE = (
    """CREATE VIRTUAL TABLE assistants_api_chunk_fts USING fts5(
           text, content='assistants_api_chunk', content_rowid='id',
           tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER assistants_api_chunk_fts_insert AFTER INSERT ON assistants_api_chunk BEGIN
           INSERT INTO assistants_api_chunk_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    """CREATE TRIGGER assistants_api_chunk_fts_delete AFTER DELETE ON assistants_api_chunk BEGIN
           INSERT INTO assistants_api_chunk_fts(assistants_api_chunk_fts, rowid, text)
           VALUES ('delete', old.id, old.text);
       END""",
    """CREATE TRIGGER assistants_api_chunk_fts_update AFTER UPDATE OF text ON assistants_api_chunk BEGIN
           INSERT INTO assistants_api_chunk_fts(assistants_api_chunk_fts, rowid, text)
           VALUES ('delete', old.id, old.text);
           INSERT INTO assistants_api_chunk_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    "INSERT INTO assistants_api_chunk_fts(assistants_api_chunk_fts) VALUES ('rebuild')",
)
SQLITE_REVERSE = (
    "DROP TRIGGER IF EXISTS assistants_api_chunk_fts_update",
    "DROP TRIGGER IF EXISTS assistants_api_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS assistants_api_chunk_fts_insert",
    "DROP TABLE IF EXISTS assistants_api_chunk_fts",
)
POSTGRESQL = (
    """ALTER TABLE assistants_api_chunk ADD COLUMN search_vector tsvector
           GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED""",
    "CREATE INDEX assistants_api_chunk_search ON assistants_api_chunk USING GIN (search_vector)",
)
POSTGRESQL_REVERSE = (
    "DROP INDEX IF EXISTS assistants_api_chunk_search",
    "ALTER TABLE assistants_api_chunk DROP COLUMN IF EXISTS search_vector",
)


def _run(statements: dict):
    def run(apps, schema_editor) -> None:
        for statement in statements.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("assistants_api", "0004_knowledge"),
    ]

    operations = [
        migrations.RunPython(_run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
                             _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}), elidable=False),
    ]
