"""The store's most frequent statements, as SQL built once per database and kept.

Building a query with the ORM costs more CPU than SQLite spends running it, so the requests every client
makes all the time (add a message, read a page of messages, create a thread) send SQL made once:

- a message is added by one ``INSERT ... SELECT`` that finds its thread by public id and checks that the
  thread has no active run in the same statement: no transaction, no lookups first. When it inserts
  nothing (no such thread, or a run is active) the store takes its ordinary path, which says why;
- a page of messages is one ``SELECT`` joined on the thread's public id (the thread is looked up only when
  the page is empty, to tell an empty thread from a missing one), its rows read as tuples, not models;
- a thread without messages is one ``INSERT``;
- a run's creation finds its assistant, its thread and whether that has an active run in one ``SELECT``;
  its start reads the thread's history as ``(role, content)`` rows.

SELECTs are compiled by the ORM itself (``Compiled``: built once with stand-in values, which are then
swapped for the real ones), so their SQL is Django's for the backend; INSERTs are written from the models'
fields, their values prepared by the fields as ``save()`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, lru_cache

from django.db import connections, router
from django.db.models import Exists, Model, QuerySet, Subquery

from . import serializers
from .models import ACTIVE_RUN_STATUSES, Assistant, Message, Run, Thread


class Compiled:
    """A queryset's SQL, compiled once; ``params(**values)`` swaps the stand-ins for the values.

    The stand-ins are values no caller passes (a string with NUL characters, a large negative number); each
    must come out of the compiler as it went in, once, or the statement is refused when it is built.
    """

    def __init__(self, queryset: QuerySet, **stand_ins: str | int) -> None:
        self.alias = queryset.db
        self.sql, params = queryset.query.get_compiler(using=self.alias).as_sql()
        names = {value: name for name, value in stand_ins.items()}
        self._slots = [(names.get(p) if isinstance(p, (str, int)) else None, p) for p in params]
        found = sorted(name for name, _ in self._slots if name)
        if found != sorted(stand_ins):
            raise ValueError(f"stand-ins {sorted(stand_ins)} did not come out of the compiler once each: {found}")

    def rows(self, **values: object) -> list[tuple]:
        params = [values[name] if name else constant for name, constant in self._slots]
        with connections[self.alias].cursor() as cursor:
            cursor.execute(self.sql, params)
            return cursor.fetchall()


def stand_in(name: str) -> str:
    return f"\x00{name}\x00"


SEQ_STAND_IN = -(2**62) + 7

# Messages ----------------------------------------------------------------------

#: The columns a message's object is made of (``serializers.MESSAGE`` less what the caller gives).
MESSAGE_COLUMNS = ("id", "created_at", "status", "incomplete_details", "completed_at", "incomplete_at", "role",
                   "content", "assistant_id", "run_id", "attachments", "metadata")
_MESSAGE_JSON = frozenset(f.name for f in Message._meta.concrete_fields if f.get_internal_type() == "JSONField")


def _thread_messages(alias: str, by_run: bool) -> tuple[QuerySet, dict[str, str | int]]:
    messages = Message.objects.using(alias).filter(thread__id=stand_in("thread"))
    if by_run:
        return messages.filter(run_id=stand_in("run")), {"thread": stand_in("thread"), "run": stand_in("run")}
    return messages, {"thread": stand_in("thread")}


@cache
def message_seq(alias: str, by_run: bool) -> Compiled:
    """The seq of a message of the list (a cursor): by thread id (and run id), and message id."""
    messages, stand_ins = _thread_messages(alias, by_run)
    return Compiled(messages.filter(id=stand_in("id")).values_list("seq"), **stand_ins, id=stand_in("id"))


@cache
def message_page(alias: str, by_run: bool, bounds: tuple[str, ...], ascending: bool, count: int) -> Compiled:
    """``count`` messages of a thread (and run) in seq order, past ``bounds`` ("gt"/"lt": params seq0, seq1)."""
    messages, stand_ins = _thread_messages(alias, by_run)
    for index, op in enumerate(bounds):
        messages = messages.filter(**{f"seq__{op}": SEQ_STAND_IN - index})
        stand_ins[f"seq{index}"] = SEQ_STAND_IN - index
    ordered = messages.order_by("seq" if ascending else "-seq").values_list(*MESSAGE_COLUMNS)[:count]
    return Compiled(ordered, **stand_ins)


def _scalar(value: object, _text=json.encoder.encode_basestring_ascii) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def _stored_json(value: object) -> str:
    """A JSON column's value as the database gives it: JSON text (SQLite's text, PostgreSQL's jsonb as text)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return json.dumps(value)  # a driver that decoded it


def _message_template() -> tuple[str, tuple]:
    """The JSON text of a message (``serializers.MESSAGE``'s order) as a format string over the row's columns."""
    pieces, converters = [], []
    for name in serializers.MESSAGE:
        if name == "object":
            pieces.append('"object":"thread.message"')
        elif name == "thread_id":
            pieces.append('"thread_id":{thread}')
        else:
            pieces.append(f'"{name}":{{{MESSAGE_COLUMNS.index(name)}}}')
    for name in MESSAGE_COLUMNS:
        converters.append(_stored_json if name in _MESSAGE_JSON else _scalar)
    return "{{" + ",".join(pieces) + "}}", tuple(converters)


_MESSAGE_TEMPLATE, _MESSAGE_CONVERTERS = _message_template()


def message_encoder(thread_id: str) -> Callable[[tuple], str]:
    """Row of ``MESSAGE_COLUMNS`` -> the message object's JSON text, its JSON columns copied as stored (not
    decoded and encoded again: on a page of messages that was most of the request's CPU)."""
    thread = _scalar(thread_id)
    template, converters = _MESSAGE_TEMPLATE, _MESSAGE_CONVERTERS

    def encode(row: tuple) -> str:
        return template.format(*[convert(value) for convert, value in zip(converters, row, strict=True)],
                               thread=thread)

    return encode


# Inserts -----------------------------------------------------------------------


def _columns(model: type[Model], skip: tuple[str, ...] = ()) -> list:
    """The fields an INSERT writes: all but the auto primary key (and ``skip``)."""
    return [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in skip]


@cache
def _message_insert(alias: str) -> tuple[str, list]:
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = _columns(Message, skip=("thread",))
    thread_fk = Message._meta.get_field("thread").column
    thread_seq, run_thread = Thread._meta.pk.column, Run._meta.get_field("thread").column
    statuses = ", ".join(["%s"] * len(ACTIVE_RUN_STATUSES))
    sql = (f"INSERT INTO {quote(Message._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}, "
           f"{quote(thread_fk)}) SELECT {', '.join(['%s'] * len(fields))}, t.{quote(thread_seq)} "
           f"FROM {quote(Thread._meta.db_table)} t WHERE t.{quote('id')} = %s AND NOT EXISTS (SELECT 1 FROM "
           f"{quote(Run._meta.db_table)} r WHERE r.{quote(run_thread)} = t.{quote(thread_seq)} "
           f"AND r.{quote('status')} IN ({statuses}))")
    return sql, fields


def _prepared(row: Model, fields: list, connection) -> list:
    return [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]


def insert_message(message: Message, thread_id: str) -> bool:
    """Insert ``message`` (made without its thread) into thread ``thread_id`` if that thread exists and has no
    active run, in one statement; False when nothing was inserted (the caller finds out why)."""
    alias = router.db_for_write(Message)
    connection = connections[alias]
    sql, fields = _message_insert(alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_prepared(message, fields, connection), thread_id, *ACTIVE_RUN_STATUSES])
        return cursor.rowcount == 1


@cache
def _insert(model: type[Model], alias: str) -> tuple[str, list]:
    quote = connections[alias].ops.quote_name
    fields = _columns(model)
    return (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})"), fields


def insert(row: Model) -> None:
    """One INSERT of a new row whose fields need nothing from the database (its primary key is not read back:
    the store's objects are known by their public id)."""
    alias = router.db_for_write(type(row))
    connection = connections[alias]
    sql, fields = _insert(type(row), alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, _prepared(row, fields, connection))



# A run's creation ------------------------------------------------------------------

#: The assistant's fields a new run takes (``run_store._new_run``), in the model's order (``Model.from_db``'s).
RUN_ASSISTANT_FIELDS = tuple(f.attname for f in Assistant._meta.concrete_fields if f.attname in (
    "seq", "id", "model", "instructions", "tools", "temperature", "top_p", "response_format", "reasoning_effort"))
_RUN_ASSISTANT_JSON = frozenset(f.attname for f in Assistant._meta.concrete_fields
                                if f.get_internal_type() == "JSONField")


@cache
def _run_lookup(alias: str) -> Compiled:
    thread = Thread.objects.using(alias).filter(id=stand_in("thread")).values("seq")[:1]
    busy = Run.objects.using(alias).filter(thread__id=stand_in("busy"), status__in=ACTIVE_RUN_STATUSES)
    assistants = (Assistant.objects.using(alias).filter(id=stand_in("assistant"))
                  .annotate(thread_seq=Subquery(thread), busy=Exists(busy))
                  .values_list(*RUN_ASSISTANT_FIELDS, "thread_seq", "busy")[:1])
    return Compiled(assistants, thread=stand_in("thread"), busy=stand_in("busy"), assistant=stand_in("assistant"))


def _decoded(value: object) -> object:
    """A JSON column's value as ``JSONField.from_db_value`` gives it (text or bytes decoded; a driver's value as is)."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode()
    return json.loads(value) if isinstance(value, str) else value


def run_lookup(thread_id: str, assistant_id: str) -> tuple[Assistant, int, bool] | None:
    """The assistant (only the fields a new run takes; the others deferred), the thread's seq and whether the
    thread has an active run, in one SELECT; None when the assistant or the thread is missing."""
    alias = router.db_for_read(Assistant)
    rows = _run_lookup(alias).rows(thread=thread_id, busy=thread_id, assistant=assistant_id)
    if not rows or rows[0][-2] is None:
        return None
    *values, thread_seq, busy = rows[0]
    values = [_decoded(v) if name in _RUN_ASSISTANT_JSON else v
              for name, v in zip(RUN_ASSISTANT_FIELDS, values, strict=True)]
    return Assistant.from_db(alias, RUN_ASSISTANT_FIELDS, values), thread_seq, bool(busy)


# A run's start -------------------------------------------------------------------

_THREAD_SEQ_STAND_IN = 2**31 - 23  # in the key's range (else no SQL is made)


@lru_cache(maxsize=64)
def _history(alias: str, limit: int | None) -> Compiled:
    messages = (Message.objects.using(alias).filter(thread_id=_THREAD_SEQ_STAND_IN)
                .exclude(run_id=stand_in("run"), role="assistant").order_by("-seq").values_list("role", "content"))
    return Compiled(messages[:limit] if limit else messages, thread=_THREAD_SEQ_STAND_IN, run=stand_in("run"))


def history(thread_seq: int, run_id: str, limit: int | None) -> list[tuple[str, list]]:
    """What a run's responder sees of its thread (``prompt._context``): ``(role, content)`` of the thread's
    messages, newest first, but this run's own replies; the newest ``limit`` only when given."""
    rows = _history(router.db_for_read(Message), limit).rows(thread=thread_seq, run=run_id)
    return [(role, _decoded(content)) for role, content in rows]
