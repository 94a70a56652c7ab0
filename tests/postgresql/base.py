"""PostgreSQL for the test run: Django's backend, except that the flush between transactional tests deletes rows.

After each transactional test Django empties every table with one ``TRUNCATE``, which on PostgreSQL gives each of
the ~50 tables new files: 0.4 to 0.8 s per test here, minutes over the suite. ``DELETE`` of the few rows a test
left is a few milliseconds. Django makes PostgreSQL foreign keys ``DEFERRABLE INITIALLY DEFERRED``, so the
deletes run inside the flush's transaction and are checked when it commits.

They run parents first: a background thread still at work when a test ends (an ingestion writing a file's
chunks, which holds the file's row) then commits before the parent's delete goes on, and its new rows are gone
with the child table's delete that follows; children first, they were left pointing at deleted parents and the
flush failed at commit.
"""

from functools import cached_property
from graphlib import CycleError, TopologicalSorter

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    @cached_property
    def _parents(self) -> dict[str, set[str]]:
        """table -> the tables its foreign keys point to."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                           "WHERE contype = 'f'")
            parents: dict[str, set[str]] = {}
            for child, parent in cursor.fetchall():
                if child != parent:
                    parents.setdefault(child.strip('"'), set()).add(parent.strip('"'))
        return parents

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade or not tables:  # what DELETE cannot do: Django's TRUNCATE
            return super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        wanted = set(tables)
        graph = {table: self._parents.get(table, set()) & wanted for table in sorted(wanted)}
        try:
            ordered = list(TopologicalSorter(graph).static_order())  # parents before their children
        except CycleError:  # tables that point at each other: any order (the constraints are deferred)
            ordered = sorted(wanted)
        return ["SET CONSTRAINTS ALL DEFERRED;"] + [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in ordered
        ]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
