"""``BaseAssistant``: the assistant entity, the one with the most behaviour of the four.

Besides mirroring the backend's assistant, an assistant class carries what the app builds on it: its docstring
as default instructions, its Python function tools, the models its sessions may choose, its declared
``knowledge``, and the publish queue created and deleted with it (sessions, application events, durable
consumers). That is more than the other entities together, so it has its own module; ``entities`` holds the
thread, message and run bases and the concrete defaults. Subclass it and add ordinary Django fields; each
added field is persisted into the backend assistant's metadata.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar

import openai
from django.db import models

from betaassi_django.client import get_client
from betaassi_django.metadata import OWNER_KEY
from betaassi_django.publishing import ownership
from betaassi_django.publishing.api import Queue, Sessions
from betaassi_django.publishing.backend import (
    PUBLISH_KEY,
    REGISTRY_KEY,
    create_queue,
    delete_queue,
    delete_threads,
    queue_threads,
)
from betaassi_django.publishing.status import forget_assistant

from . import knowledge as declared_knowledge
from .base import RemoteModel

__all__ = ["BaseAssistant"]

logger = logging.getLogger("betaassi_django.models")


class _Consumer:
    """``assistant.consumer(name, **options)`` follows that assistant's queue; ``Support.consumer(name, ...)``
    every assistant of the class (``betaassi_django.publishing.consumer.assistant_consumer``)."""

    def __get__(self, instance, owner):
        target = owner if instance is None else instance

        def consumer(name: str, **options):
            from betaassi_django.publishing.consumer import assistant_consumer

            return assistant_consumer(target, name, **options)

        return consumer


class BaseAssistant(RemoteModel):
    """An assistant. The subclass's docstring is its default instructions."""

    name = models.CharField(max_length=256, blank=True, null=True)
    description = models.CharField(max_length=512, blank=True, null=True)
    model = models.CharField(max_length=256, default="gpt-4o")
    instructions = models.TextField(blank=True, null=True, max_length=256000)
    tools = models.JSONField(default=list, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)

    remote_fields = ("name", "description", "model", "instructions", "tools", "temperature", "top_p")
    writable_fields = remote_fields
    #: Python functions the model may call (see ``betaassi_django.tools``): their schemas are added to
    #: ``tools`` when the assistant is saved, and sessions execute them when a run asks.
    function_tools: ClassVar[list] = []
    #: Models a session of this assistant may choose besides the assistant's own (exact names, or ``fnmatch``
    #: patterns such as ``"gpt-4o-*"``). None: the assistant's own model only. See ``betaassi_django.quotas``.
    allowed_models: ClassVar[list[str] | None] = None
    #: Files to upload into a vector store for ``file_search`` (paths relative to ``BASE_DIR``), or one vector
    #: store id: see ``betaassi_django.models.knowledge`` (docs/knowledge.md).
    knowledge: ClassVar[list[str]] = []

    class Meta:
        abstract = True

    def __init_subclass__(cls, **kwargs):
        # Django writes a generated docstring onto models without one: keep the declared one.
        super().__init_subclass__(**kwargs)
        cls._declared_doc = cls.__dict__.get("__doc__")
        if "function_tools" in cls.__dict__:
            from betaassi_django.tools import as_tools

            cls._function_tools = as_tools(cls.function_tools)  # a bad function fails at import, not at a run
        if cls.__dict__.get("knowledge"):
            declared_knowledge.parse(cls, cls.knowledge)  # a declaration no backend can serve fails at import

    @classmethod
    def function_tools_by_name(cls) -> dict:
        """This class's function tools by name."""
        from betaassi_django.tools import as_tools

        return getattr(cls, "_function_tools", None) or as_tools(cls.function_tools)

    def modify_payload(self, metadata: dict[str, str]) -> dict[str, Any]:
        from betaassi_django.tools import merge_tool_definitions

        payload = super().modify_payload(metadata)
        payload["tools"] = merge_tool_definitions(payload["tools"], self.function_tools_by_name().values())
        prepared = getattr(self, "_knowledge", None)
        return declared_knowledge.apply(prepared, payload) if prepared else payload

    @classmethod
    def default_instructions(cls) -> str | None:
        doc = getattr(cls, "_declared_doc", None)
        return inspect.cleandoc(doc) if doc else None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.id and self.instructions is None:
            self.instructions = self.default_instructions()

    @classmethod
    def resource(cls, api) -> Any:
        return api.beta.assistants

    @classmethod
    def reserved_keys(cls) -> tuple[str, ...]:
        knowledge = (declared_knowledge.KNOWLEDGE_KEY,) if cls.knowledge else ()  # only a class that declares it
        return (*super().reserved_keys(), PUBLISH_KEY, REGISTRY_KEY, OWNER_KEY, *knowledge)

    def remote_values(self, obj: Any) -> dict[str, Any]:
        values = super().remote_values(obj)
        values["tools"] = [tool.model_dump(exclude_none=True) for tool in obj.tools]
        return values

    # -- the publish queue, created and deleted with the assistant -------------

    def _with_queue(self) -> list[str]:
        """Create the publish thread and registry of a new assistant; returns their ids (to undo)."""
        # The deployment that applies its queue (none for "default"): docs/deployment.md. Counted by the checks.
        self.metadata = {**(self.metadata or {}), **ownership.owner_keys()}
        self.validate_for_backend()  # refuse bad values before any backend call
        keys = create_queue(get_client())
        self.metadata = {**self.metadata, **keys}
        return list(keys.values())

    def _undo_queue(self, thread_ids: list[str]) -> None:
        delete_queue(get_client(), dict(zip((PUBLISH_KEY, REGISTRY_KEY), thread_ids, strict=True)))

    def _with_knowledge(self) -> None:
        """Upload the class's declared knowledge if it changed (``models.knowledge``), after the values are
        known to be valid; the save then sends the store in ``tool_resources``."""
        self._knowledge = None
        if not self.knowledge:
            return
        if self.id:
            self.validate_for_backend()
        self._knowledge = declared_knowledge.prepare(get_client(), type(self), self.metadata or {})
        self.metadata = {**(self.metadata or {}), declared_knowledge.KNOWLEDGE_KEY: self._knowledge.marker}

    def _after_knowledge(self, saved: bool) -> None:
        prepared, self._knowledge = getattr(self, "_knowledge", None), None
        if prepared is not None:
            (declared_knowledge.finish if saved else declared_knowledge.undo)(get_client(), prepared)

    def save(self, *args, **kwargs) -> None:
        created = self._with_queue() if not self.id else None
        try:
            self._with_knowledge()
            super().save(*args, **kwargs)
        except Exception:
            self._after_knowledge(saved=False)
            if created:
                self._undo_queue(created)
            raise
        self._after_knowledge(saved=True)

    async def asave(self, *args, **kwargs) -> None:
        from asgiref.sync import sync_to_async

        created = await sync_to_async(self._with_queue)() if not self.id else None
        try:
            await sync_to_async(self._with_knowledge)()
            await super().asave(*args, **kwargs)
        except Exception:
            await sync_to_async(self._after_knowledge)(False)
            if created:
                await sync_to_async(self._undo_queue)(created)
            raise
        await sync_to_async(self._after_knowledge)(True)

    def delete(self, *args, **kwargs):
        """Delete the assistant, then its publish thread, registry and session threads.

        The assistant's own delete is the one step that decides: if the backend fails before it,
        nothing changed; thread deletes that fail after it leave only unreachable threads behind.
        """
        api, assistant_id = get_client(), self.id
        doomed = queue_threads(api, self.metadata or {})
        made, _, _ = (self.metadata or {}).get(declared_knowledge.KNOWLEDGE_KEY, "").rpartition(":")
        result = super().delete(*args, **kwargs)
        forget_assistant(assistant_id)
        if made:  # the store the class's knowledge was uploaded into, with its files
            declared_knowledge.forget(api, made)
        try:
            delete_threads(api, doomed)
        except openai.APIError:
            logger.exception("assistant %s deleted; some of its queue threads were not: %s", assistant_id, doomed)
        return result

    # -- sessions and the publish queue (see betaassi_django.publishing.api) ---

    @property
    def sessions(self) -> Sessions:
        """This assistant's sessions: ``assistant.sessions.create(session_id, owner=...)``, ``.update``,
        ``.delete``, ``.get``, ``.list``, ``.wait``."""
        return Sessions(self)

    @property
    def queue(self) -> Queue:
        """This assistant's publish queue: ``assistant.queue.set_attr(field, value)``, ``.events(after=...)``."""
        return Queue(self)

    def publish(self, type: str, data=None, *, wait: bool = False, timeout: float = 10.0) -> str:
        """Publish an application event on this assistant's queue (docs/events.md, ``app.event``): its id.
        ``ValidationError`` naming ``type`` or ``data`` before any backend call."""
        return Queue(self).publish(type, data, wait=wait, timeout=timeout)

    async def apublish(self, type: str, data=None, *, wait: bool = False, timeout: float = 10.0) -> str:
        """``publish``, the async twin."""
        return await Queue(self).apublish(type, data, wait=wait, timeout=timeout)

    #: A durable consumer of the queue: ``assistant.consumer("billing")`` (this assistant),
    #: ``Support.consumer("billing")`` (every assistant of the class). docs/consumers.md.
    consumer = _Consumer()
