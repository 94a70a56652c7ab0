"""The Python API of an assistant's publish queue: ``assistant.sessions`` and ``assistant.queue``.

Every change is published as an event on the assistant's publish thread and applied, in order, by the
processor (``process_publish_queue``): the methods that change something validate at once (a
``ValidationError`` naming the field), publish, and return the event id; with ``wait=True`` they return once
the event is processed (``TimeoutError`` after ``timeout`` seconds). Reads go to the registry in the backend,
the source of truth.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from django.core.exceptions import ValidationError

from betaassi_django import quotas
from betaassi_django.client import get_client
from betaassi_django.messages import text_of

from . import publisher
from .apply import session_from_record
from .backend import create_thread, find_record, load_registry, publish_thread, queue_ids, session_thread_tags
from .events import (
    MAX_BODY_LENGTH,
    Event,
    Rejected,
    check_app_data,
    check_app_type,
    check_session_args,
    check_session_id,
    parse,
    read,
)
from .models import PublishedEvent, Session


class _Published:
    """What both objects share: the assistant, and waiting for an event's outcome."""

    def __init__(self, assistant) -> None:
        self.assistant = assistant

    def wait(self, event_id: str, timeout: float = 10.0) -> PublishedEvent:
        """Block until the processor recorded the event; its record (``status``, ``reason``)."""
        return publisher.wait(event_id, timeout)

    async def await_(self, event_id: str, timeout: float = 10.0) -> PublishedEvent:
        """``wait``, the async twin (``await_``: ``await`` is a keyword)."""
        return await publisher.await_(event_id, timeout)

    def _publish(self, event: Event, wait: bool, timeout: float) -> str:
        event_id = publisher.publish(self.assistant, event)
        if wait:
            publisher.wait(event_id, timeout)
        return event_id


class Sessions(_Published):
    """An assistant's sessions: ``assistant.sessions.create(...)``, ``.update``, ``.delete``, ``.get``, ``.list``."""

    def create(self, session_id: str, *, owner, kind: str = "default", context_messages: int | None = None,
               model: str | None = None, wait: bool = False, timeout: float = 10.0) -> str:
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
            raise publisher.invalid(exc) from None
        # The operator's limits, before any backend call.
        quotas.check_create(self.assistant, owner_id, args.get("model"), Session.objects)
        queue_ids(self.assistant)
        # Tagged for this session of this assistant: the processor accepts (and ever deletes) only such a thread.
        thread_id = create_thread(get_client(), session_thread_tags(self.assistant.id, session_id))
        return self._publish(Event("session.create", session_id, {**args, "thread_id": thread_id}), wait, timeout)

    def update(self, session_id: str, *, wait: bool = False, timeout: float = 10.0, **changes) -> str:
        """Publish ``session.update`` of ``kind``, ``context_messages`` or ``model``."""
        try:
            check_session_id(session_id)
            args = check_session_args(changes, creating=False)
        except Rejected as exc:
            raise publisher.invalid(exc) from None
        if "model" in args:
            quotas.check_model(self.assistant, args["model"])
        return self._publish(Event("session.update", session_id, args), wait, timeout)

    def delete(self, session_id: str, *, wait: bool = False, timeout: float = 10.0) -> str:
        """Publish ``session.delete`` (the processor deletes the session's thread)."""
        try:
            check_session_id(session_id)
        except Rejected as exc:
            raise publisher.invalid(exc) from None
        return self._publish(Event("session.delete", session_id, {}), wait, timeout)

    def get(self, session_id: str) -> Session | None:
        """One session from the registry in the backend, as a ``Session``; None if absent. Two reads the first time
        (the root, the bucket's head); then the root's directory is kept: the head, and in an overflowed bucket
        (past about 20,000 sessions) its one overflow page."""
        _, root_id = queue_ids(self.assistant)
        record = find_record(get_client(), root_id, session_id, cached=True)
        return None if record is None else self._session(session_id, record)

    def list(self) -> list[Session]:
        """Every session in the registry, by session id."""
        _, root_id = queue_ids(self.assistant)
        _, pages = load_registry(get_client(), root_id)
        records = sorted((sid, r) for p in pages for sid, r in p.sessions.items())
        return [self._session(sid, record) for sid, record in records]

    def _session(self, session_id: str, record: dict) -> Session:
        """A ``Session`` built from the registry record (the mirror row's pk, when there is one)."""
        data = session_from_record(session_id, record)
        assistant_id = self.assistant.id
        mirror = Session.objects.filter(assistant_id=assistant_id, session_id=session_id).first()
        return Session(
            pk=mirror.pk if mirror else None, assistant_id=assistant_id, session_id=session_id,
            owner_id=data["owner"], kind=data["kind"], context_messages=data["context_messages"],
            model=data["model"], thread_id=data["thread_id"], revision=data["revision"],
            created_at=datetime.datetime.fromtimestamp(data["created_at"], tz=datetime.UTC),
            touched_at=mirror.touched_at if mirror else None,
        )


class Queue(_Published):
    """An assistant's publish queue itself: ``assistant.queue.publish(type, data)``, ``.set_attr(...)``,
    ``.events(after=...)``."""

    def publish(self, type: str, data=None, *, wait: bool = False, timeout: float = 10.0) -> str:
        """Append an application event (``app.event``), in order with the session events; returns its id.
        The processor passes it (status ``passed``) without applying anything; consumers read it."""
        return self._publish(app_event(type, data), wait, timeout)

    async def apublish(self, type: str, data=None, *, wait: bool = False,
                       timeout: float = 10.0) -> str:
        """``publish`` without blocking the event loop."""
        from asgiref.sync import sync_to_async

        event = app_event(type, data)  # validated here, before any backend call
        event_id = await sync_to_async(publisher.publish)(self.assistant, event)
        if wait:
            await publisher.await_(event_id, timeout)
        return event_id

    def set_attr(self, field: str, value, *, wait: bool = False, timeout: float = 10.0) -> str:
        """Publish a change of one of the assistant's own metadata fields (validated now, applied in order)."""
        assistant = self.assistant
        names = {f.name: f for f in type(assistant).metadata_fields()}
        if field not in names:
            raise ValidationError({field: f"{type(assistant).__name__} has no metadata field {field!r}."})
        value = names[field].clean(value, assistant)
        json_value = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        return self._publish(Event("assistant.set", None, {"field": field, "value": json_value}), wait, timeout)

    def events(self, after: str | None = None, *, page_size: int = 100) -> Iterator[tuple[str, Event | Rejected]]:
        """``(event_id, Event or Rejected)`` in order, after the event ``after`` (from the start if None), for any
        process that wants to follow the queue."""
        publish_id, _ = queue_ids(self.assistant)
        for message in publish_thread(get_client(), publish_id, after=after, limit=page_size):
            yield message.id, read(text_of(message))


def app_event(type: str, data=None) -> Event:
    """A valid ``app.event``, or a ``ValidationError`` naming ``type`` or ``data`` (the body is parsed back
    exactly as the processor will, so what passes here passes there)."""
    try:
        check_app_type(type)
        check_app_data(data)
    except Rejected as exc:
        raise publisher.invalid(exc) from None
    event = Event("app.event", None, {"type": type, "data": data})
    try:
        body = event.to_json()
    except ValueError as exc:  # an integer too long to write (Python's limit on digits)
        raise ValidationError({"data": f"data cannot be written as JSON: {exc}"[:500]}) from None
    if len(body) > MAX_BODY_LENGTH:
        raise ValidationError({"data": f"data is too large: the event's body would be {len(body)} characters, "
                                       f"more than {MAX_BODY_LENGTH}"})
    try:
        parse(body)
    except Rejected as exc:
        raise ValidationError({"data": str(exc)}) from None
    return event
