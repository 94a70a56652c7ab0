"""Publishing session changes: validate, append an event to the publish thread, return at once."""

from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.db import transaction

from betaassi_django import quotas
from betaassi_django.client import get_client

from . import signals
from .apply import session_from_record
from .backend import PUBLISH_KEY, REGISTRY_KEY, find_record, load_registry, session_thread_tags
from .events import Event, Rejected, check_session_args, check_session_id

FIELDS = ("owner", "kind", "context_messages", "model")


def _invalid(exc: Rejected) -> ValidationError:
    """A rejection as a ValidationError naming the field its message starts with."""
    message = str(exc)
    name = next((f for f in ("session_id", *FIELDS) if message.startswith(f)), "__all__")
    return ValidationError({name: message})


def _queue_ids(assistant) -> tuple[str, str]:
    metadata = assistant.metadata or {}
    if not metadata.get(PUBLISH_KEY) or not metadata.get(REGISTRY_KEY):
        raise ValueError(f"{assistant} has no publish queue; save it first")
    return metadata[PUBLISH_KEY], metadata[REGISTRY_KEY]


def publish(assistant, event: Event) -> str:
    """Append one event to the assistant's publish thread; its message id is the event id."""
    publish_id, _ = _queue_ids(assistant)
    message = get_client().beta.threads.messages.create(
        publish_id, role="user", content=event.to_json(), metadata={"betaassi_event": event.op})
    # Inside a transaction (an admin form, ATOMIC_REQUESTS) the in-process event is visible once it commits.
    transaction.on_commit(lambda: signals.wake(assistant.id))
    return message.id


def create_session(assistant, session_id: str, *, owner, kind: str = "default", context_messages: int | None = None,
                   model: str | None = None) -> str:
    """Validate, create the session's thread (the publisher's part), publish ``session.create``."""
    owner_id = getattr(owner, "pk", owner)
    args = {"owner": owner_id, "kind": kind}
    if context_messages is not None:
        args["context_messages"] = context_messages
    if model is not None:
        args["model"] = model
    try:
        check_session_id(session_id)
        args = check_session_args(args, creating=True)
    except Rejected as exc:
        raise _invalid(exc) from None
    quotas.check_create(assistant, owner_id, args.get("model"))  # the operator's limits, before any backend call
    _queue_ids(assistant)
    # Tagged for this session of this assistant: the processor accepts (and ever deletes) only such a thread.
    thread = get_client().beta.threads.create(metadata=session_thread_tags(assistant.id, session_id))
    return publish(assistant, Event("session.create", session_id, {**args, "thread_id": thread.id}))


def update_session(assistant, session_id: str, **changes) -> str:
    try:
        check_session_id(session_id)
        args = check_session_args(changes, creating=False)
    except Rejected as exc:
        raise _invalid(exc) from None
    if "model" in args:
        quotas.check_model(assistant, args["model"])
    return publish(assistant, Event("session.update", session_id, args))


def delete_session(assistant, session_id: str) -> str:
    try:
        check_session_id(session_id)
    except Rejected as exc:
        raise _invalid(exc) from None
    return publish(assistant, Event("session.delete", session_id, {}))


def set_attr(assistant, field: str, value) -> str:
    """Publish a change of one of the assistant's own metadata fields (validated now, applied in order)."""
    names = {f.name: f for f in type(assistant).metadata_fields()}
    if field not in names:
        raise ValidationError({field: f"{type(assistant).__name__} has no metadata field {field!r}."})
    value = names[field].clean(value, assistant)
    json_value = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
    return publish(assistant, Event("assistant.set", None, {"field": field, "value": json_value}))


def _session(assistant, session_id: str, record: dict):
    """A ``Session`` built from the registry record (the mirror row's pk, when there is one)."""
    import datetime

    from betaassi_django.models import Session

    data = session_from_record(session_id, record)
    mirror = Session.objects.filter(assistant_id=assistant.id, session_id=session_id).first()
    return Session(
        pk=mirror.pk if mirror else None, assistant_id=assistant.id, session_id=session_id,
        owner_id=data["owner"], kind=data["kind"], context_messages=data["context_messages"], model=data["model"],
        thread_id=data["thread_id"], revision=data["revision"],
        created_at=datetime.datetime.fromtimestamp(data["created_at"], tz=datetime.UTC),
        touched_at=mirror.touched_at if mirror else None,
    )


def get_session(assistant, session_id: str):
    """One session from the registry in the backend (two reads), as a ``Session``; None if absent."""
    _, root_id = _queue_ids(assistant)
    record = find_record(get_client(), root_id, session_id)
    return None if record is None else _session(assistant, session_id, record)


def sessions(assistant) -> list:
    """Every session in the registry, by session id."""
    _, root_id = _queue_ids(assistant)
    _, pages = load_registry(get_client(), root_id)
    records = sorted((sid, r) for p in pages for sid, r in p.sessions.items())
    return [_session(assistant, sid, record) for sid, record in records]


def wait_applied(event_id: str, timeout: float = 10.0, interval: float = 0.01) -> str:
    """Block until a processor recorded this event; returns its status (applied, noop, rejected)."""
    from betaassi_django.models import PublishedEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = PublishedEvent.objects.filter(event_id=event_id).values_list("status", flat=True).first()
        if status is not None:
            return status
        time.sleep(interval)
    raise TimeoutError(f"event {event_id} was not processed within {timeout}s; is process_publish_queue running?")


class PublishQueue:
    """An assistant's publish queue, for any process that wants to follow it."""

    def __init__(self, assistant) -> None:
        self.assistant = assistant

    def events(self, after: str | None = None, *, page_size: int = 100):
        """``(event_id, Event or Rejected)`` in order, after the event ``after`` (from the start if None)."""
        from .events import parse

        publish_id, _ = _queue_ids(self.assistant)
        api = get_client()
        for message in api.beta.threads.messages.list(publish_id, order="asc", limit=page_size,
                                                      **({"after": after} if after else {})):
            content = "".join(part.text.value for part in message.content if part.type == "text")
            try:
                yield message.id, parse(content)
            except Rejected as exc:
                yield message.id, exc
