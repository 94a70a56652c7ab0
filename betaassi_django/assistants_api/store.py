"""Synchronous store operations behind the /v1 views.

Views validate bodies against the specification, then call these through
``sync_to_async`` so each operation is one short database transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.db import connections, router, transaction
from django.http import QueryDict

from . import recovery, run_options, serializers, statements
from .errors import ApiError, invalid, not_found
from .ids import now
from .knowledge import resources
from .limits import plausible_id
from .models import ACTIVE_RUN_STATUSES, Assistant, Message, Run, RunStep, Thread
from .pagination import bad_cursor, finish_encoded, page, plan

ASSISTANT_FIELDS = (
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
)


def _tool_resources(value: dict | None, param: str) -> dict | None:
    """The stored shape of the specification: a vector store named is checked, one the ``vector_stores`` helper
    asks for is created (``knowledge.resources``)."""
    return resources.resolve(value, param)


# Assistants ---------------------------------------------------------------


def check_id(kind: str, object_id: str) -> None:
    """An id that no object can have is not found without a query (it may hold anything: NUL, 100 kB...)."""
    if not plausible_id(object_id):
        raise not_found(kind, object_id)


def _get(model: type[Assistant] | type[Thread], kind: str, object_id: str) -> Assistant | Thread:
    """An assistant or a thread by id (they stand alone), or a 404."""
    check_id(kind, object_id)
    try:
        return model.objects.get(id=object_id)
    except model.DoesNotExist:
        raise not_found(kind, object_id) from None


def _delete(model: type[Assistant] | type[Thread], kind: str, object_id: str) -> dict:
    """Delete an assistant or a thread (with what the database cascades to), or a 404."""
    check_id(kind, object_id)
    deleted, _ = model.objects.filter(id=object_id).delete()
    if not deleted:
        raise not_found(kind, object_id)
    return serializers.deleted(kind, object_id)


def get_assistant(assistant_id: str) -> Assistant:
    return _get(Assistant, "assistant", assistant_id)


def create_assistant(body: dict) -> dict:
    run_options.check_response_format(body.get("response_format"))
    values = {k: body[k] for k in ASSISTANT_FIELDS if k in body}
    values["tool_resources"] = _tool_resources(values.get("tool_resources"), "tool_resources")
    values.setdefault("tools", [])
    values["metadata"] = values.get("metadata") or {}
    values.setdefault("temperature", 1.0)
    values.setdefault("top_p", 1.0)
    values.setdefault("response_format", "auto")
    return serializers.assistant(Assistant.objects.create(**values))


def modify_assistant(assistant_id: str, body: dict) -> dict:
    run_options.check_response_format(body.get("response_format"))
    with transaction.atomic():
        assistant = get_assistant(assistant_id)
        for field in ASSISTANT_FIELDS:
            if field in body:
                value = body[field]
                if field == "tool_resources":
                    value = _tool_resources(value, field)
                elif field in ("metadata", "tools"):
                    value = value or ({} if field == "metadata" else [])
                setattr(assistant, field, value)
        assistant.save()
    return serializers.assistant(assistant)


def delete_assistant(assistant_id: str) -> dict:
    return _delete(Assistant, "assistant", assistant_id)


def list_assistants(query: QueryDict, only: frozenset[str] | None = None) -> dict:
    """``only``: the assistant ids a limited API key reaches (None: every assistant)."""
    assistants = Assistant.objects.all() if only is None else Assistant.objects.filter(id__in=only)
    return page(assistants, query, serializers.assistant)


# Threads and messages ------------------------------------------------------


def get_thread(thread_id: str) -> Thread:
    return _get(Thread, "thread", thread_id)


def message_content(content: str | list) -> list:
    """Request content (a string or parts) -> stored content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
        else:
            parts.append(part)
    return parts


def new_message(thread: Thread | None, body: dict) -> Message:
    return Message(
        thread=thread,
        role=body["role"],
        content=message_content(body["content"]),
        attachments=body.get("attachments") or [],
        metadata=body.get("metadata") or {},
        status="completed",
    )


def insert_thread(body: dict, param: str = "messages") -> Thread:
    """``param``: where the body's messages are (for the errors about their attachments)."""
    searched = resources.check_attachments(body.get("messages") or [], param)
    thread = Thread.objects.create(
        metadata=body.get("metadata") or {},
        tool_resources=_tool_resources(body.get("tool_resources"), "tool_resources"),
    )
    Message.objects.bulk_create([new_message(thread, m) for m in body.get("messages") or []])
    resources.attach(thread, searched)  # file_search attachments: into the thread's vector store
    return thread


def create_thread(body: dict) -> dict:
    if not body.get("messages"):  # one statement: no transaction needed
        thread = Thread(metadata=body.get("metadata") or {},
                        tool_resources=_tool_resources(body.get("tool_resources"), "tool_resources"))
        statements.insert(thread)
        return serializers.thread(thread)
    with transaction.atomic():
        return serializers.thread(insert_thread(body))


def modify_thread(thread_id: str, body: dict) -> dict:
    with transaction.atomic():
        thread = get_thread(thread_id)
        changed = []  # only what the body changes is written (a registry write is metadata only)
        if "metadata" in body:
            thread.metadata = body["metadata"] or {}
            changed.append("metadata")
        if "tool_resources" in body:
            thread.tool_resources = _tool_resources(body["tool_resources"], "tool_resources")
            changed.append("tool_resources")
        if changed:
            thread.save(update_fields=changed)
    return serializers.thread(thread)


@cache
def _thread_deletes(alias: str) -> tuple[str, ...] | None:
    """A thread's delete as four DELETEs (its runs' steps, its messages, its runs, the thread), each finding the
    thread by its public id: what the cascade collector deletes, without its SELECTs and per-model Python
    (~3x a retrieve). None when anything else refers to these models: the collector then does it."""
    owned = {(Thread, Message), (Thread, Run), (Run, RunStep)}
    for model in (Thread, Message, Run, RunStep):
        if {(model, r.related_model) for r in model._meta.related_objects} - owned:
            return None
    quote = connections[alias].ops.quote_name

    def column(model, field: str) -> str:
        return quote(model._meta.get_field(field).column)

    table = {m: quote(m._meta.db_table) for m in (Thread, Message, Run, RunStep)}
    thread = f"SELECT {column(Thread, 'seq')} FROM {table[Thread]} WHERE {column(Thread, 'id')} = %s"
    runs = f"SELECT {column(Run, 'seq')} FROM {table[Run]} WHERE {column(Run, 'thread')} IN ({thread})"
    return (f"DELETE FROM {table[RunStep]} WHERE {column(RunStep, 'run')} IN ({runs})",
            f"DELETE FROM {table[Message]} WHERE {column(Message, 'thread')} IN ({thread})",
            f"DELETE FROM {table[Run]} WHERE {column(Run, 'thread')} IN ({thread})",
            f"DELETE FROM {table[Thread]} WHERE {column(Thread, 'id')} = %s")


def delete_thread(thread_id: str) -> dict:
    """The thread and everything in it (what its foreign keys cascade to), in one transaction; or a 404."""
    alias = router.db_for_write(Thread)
    deletes = _thread_deletes(alias)
    if deletes is None:
        return _delete(Thread, "thread", thread_id)
    check_id("thread", thread_id)
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        for sql in deletes:
            cursor.execute(sql, [thread_id])
        if not cursor.rowcount:
            raise not_found("thread", thread_id)
    return serializers.deleted("thread", thread_id)


def active_run(thread: Thread) -> Run | None:
    """The thread's active run; one whose time ran out is expired on the way, and one whose process died (no
    heartbeat) is ended now, freeing the thread (only looked for when there is an active run: one query in the
    common case)."""
    active = Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).only("id", "status", "expires_at")
    runs = list(active)
    if runs:
        recovery.reap_thread(thread.pk)
        runs = list(active.all())
    for run in runs:
        if run.expires_at is not None and run.expires_at < now():
            Run.objects.filter(pk=run.pk, status=run.status).update(status="expired")
            continue
        return run
    return None


def create_message(thread_id: str, body: dict) -> dict:
    """One statement when the thread exists and is free (``statements.insert_message``); otherwise the thread and
    its active run are looked at to say why (a 404, a 400), or to end a run whose time or process is gone."""
    check_id("thread", thread_id)
    message = new_message(None, body)
    attached = bool(body.get("attachments"))
    searched = resources.check_attachments([body], "") if attached else []
    if not attached and statements.insert_message(message, thread_id):
        return serializers.message(message, thread_id)
    with transaction.atomic():
        thread = get_thread(thread_id)
        active = active_run(thread)
        if active is not None:
            raise invalid(f"Can't add messages to {thread_id} while a run {active.id} is active.")
        message.thread = thread
        message.save()
        resources.attach(thread, searched)  # file_search attachments: into the thread's vector store
    return serializers.message(message, thread_id)


def get_message(thread_id: str, message_id: str) -> Message:
    check_id("thread", thread_id)
    check_id("message", message_id)
    try:
        return Message.objects.get(id=message_id, thread__id=thread_id)
    except Message.DoesNotExist:
        get_thread(thread_id)
        raise not_found("message", message_id) from None


def retrieve_message(thread_id: str, message_id: str) -> dict:
    return serializers.message(get_message(thread_id, message_id), thread_id)


def modify_metadata(get: Callable[[str, str], Message | Run], serialize: Callable[[Message | Run, str], dict],
                     thread_id: str, object_id: str, body: dict) -> dict:
    """Modify a message or a run: the specification lets a client change only their metadata."""
    with transaction.atomic():
        row = get(thread_id, object_id)
        if "metadata" in body:
            row.metadata = body["metadata"] or {}
            row.save(update_fields=["metadata"])
    return serialize(row, thread_id)


def modify_message(thread_id: str, message_id: str, body: dict) -> dict:
    return modify_metadata(get_message, serializers.message, thread_id, message_id, body)


def delete_message(thread_id: str, message_id: str) -> dict:
    with transaction.atomic():
        get_message(thread_id, message_id).delete()
    return serializers.deleted("thread.message", message_id)


def list_messages(thread_id: str, query: QueryDict) -> dict:
    """A page of messages in one statement (``statements.message_page``); the thread itself is read only when the
    page is empty or the request is refused, so that a missing thread is a 404 before any 400 about the query."""
    check_id("thread", thread_id)
    run_id = query.get("run_id") or None
    if run_id is not None and not plausible_id(run_id):
        get_thread(thread_id)
        return page(Message.objects.none(), query, lambda m: serializers.message(m, thread_id))
    alias = router.db_for_read(Message)
    by_run = run_id is not None
    ids = {"thread": thread_id, "run": run_id} if by_run else {"thread": thread_id}

    def cursor_seq(name: str, object_id: str) -> int:
        found = statements.message_seq(alias, by_run).rows(**ids, id=object_id) if plausible_id(object_id) else []
        if not found:
            raise bad_cursor(name, object_id)
        return found[0][0]

    try:
        chosen = plan(query, cursor_seq)
    except ApiError:
        get_thread(thread_id)
        raise
    statement = statements.message_page(alias, by_run, tuple(op for op, _ in chosen.bounds), chosen.ascending,
                                        chosen.limit + 1)
    rows = statement.rows(**ids, **{f"seq{index}": seq for index, (_, seq) in enumerate(chosen.bounds)})
    if not rows and not chosen.bounds:
        get_thread(thread_id)
    return finish_encoded(rows, chosen, statements.message_encoder(thread_id), lambda row: row[0])


# Runs and steps -----------------------------------------------------------
