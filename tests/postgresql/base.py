"""PostgreSQL for the test run: Django's backend, except that the flush between transactional tests deletes rows.

After each transactional test Django empties every table with one ``TRUNCATE``, which on PostgreSQL gives each of
the ~50 tables new files: 0.4 to 0.8 s per test here, minutes over the suite. ``DELETE`` of the few rows a test
left is a few milliseconds. Django makes PostgreSQL foreign keys ``DEFERRABLE INITIALLY DEFERRED``, so the
deletes run in any order inside the flush's transaction and are checked when it commits.
"""

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade or not tables:  # what DELETE cannot do: Django's TRUNCATE
            return super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET CONSTRAINTS ALL DEFERRED;"] + [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in tables
        ]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
