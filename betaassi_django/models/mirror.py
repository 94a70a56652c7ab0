"""The mirror row's write after a save: one UPDATE whose SQL is written once per model and database.

A ``save()`` writes the backend object, then its mirror row. Django's ``save()`` compiles the UPDATE of every
column again at each call, which costs more CPU than the write itself (on SQLite, several times more); the
mirror's columns never change, so the statement is written once. The values are what ``save()`` would write
(each field's ``pre_save``, then ``get_db_prep_save``), the same ``pre_save`` and ``post_save`` signals are
sent, and a row that is gone is inserted as ``save()`` would. A model that inherits a concrete model's table,
asks for ``select_on_save``, or an instance with deferred fields or not yet in the database, or holding an
expression, is left to Django's ``save()`` (``update_row`` returns False).
"""

from __future__ import annotations

from functools import cache

from django.db import connections, models, router, transaction
from django.db.models.signals import post_save, pre_save


@cache
def _update(model: type[models.Model], alias: str) -> tuple[str, list[models.Field]]:
    meta = model._meta
    quote = connections[alias].ops.quote_name
    fields = [f for f in meta.local_concrete_fields if not f.primary_key and not f.generated]
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    return f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s", fields


def update_row(instance: models.Model) -> bool:
    """Write every column of ``instance``'s existing row, as ``save()`` would; False: nothing done, use save()."""
    model = type(instance)
    meta = model._meta
    if (meta.parents or meta.proxy or meta.select_on_save or instance._state.adding
            or instance.get_deferred_fields()):
        return False
    alias = router.db_for_write(model, instance=instance)
    sql, fields = _update(model, alias)
    if any(hasattr(getattr(instance, f.attname), "resolve_expression") for f in fields):
        return False
    instance._prepare_related_fields_for_save(operation_name="save")
    connection = connections[alias]
    pre_save.send(sender=model, instance=instance, raw=False, using=alias, update_fields=None)
    params = [f.get_db_prep_save(f.pre_save(instance, False), connection) for f in fields]
    params.append(meta.pk.get_db_prep_value(instance.pk, connection))
    with transaction.mark_for_rollback_on_error(using=alias):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            updated = cursor.rowcount > 0
        if not updated:  # the row is gone (deleted meanwhile): insert it, as save() does after an empty UPDATE
            instance._save_table(cls=model, force_insert=True, using=alias)
    instance._state.db = alias
    post_save.send(sender=model, instance=instance, created=not updated, update_fields=None, raw=False, using=alias)
    return True
