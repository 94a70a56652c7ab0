"""The Assistants-API entities that live as threads and in them, as abstract Django models, and the concrete
defaults of all four.

Subclass an abstract base and add ordinary Django fields; each added field is
persisted into the backend object's metadata::

    class StreamThread(BaseThread):
        hwm = models.CharField(max_length=64, blank=True, default="")

The assistant's base, with its tools, knowledge and publish queue, is ``assistants``'s.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import NotSupportedError, models

from betaassi_django.client import get_client
from betaassi_django.messages import text_of

from .assistants import BaseAssistant
from .base import RemoteModel
from .mapping import from_unix


class BaseThread(RemoteModel):
    """A conversation thread."""

    class Meta:
        abstract = True

    @classmethod
    def resource(cls, api) -> Any:
        return api.beta.threads

    @classmethod
    def list_remote(cls, **scope: str) -> list:
        raise NotSupportedError("The Assistants API cannot list threads; query the mirror table instead.")

    @classmethod
    async def alist_remote(cls, **scope: str) -> list:
        raise NotSupportedError("The Assistants API cannot list threads; query the mirror table instead.")


class ThreadItem(RemoteModel):
    """Common base of the entities that live in a thread (messages and runs): the SDK resource under
    ``api.beta.threads`` named by ``thread_resource``, addressed by ``thread_id`` besides their own id."""

    thread_id = models.CharField(max_length=64, db_index=True)

    #: The entity's SDK resource under ``api.beta.threads``.
    thread_resource: ClassVar[str] = ""

    class Meta:
        abstract = True

    @classmethod
    def resource(cls, api) -> Any:
        return getattr(api.beta.threads, cls.thread_resource)

    def scope(self) -> dict[str, str]:
        return {"thread_id": self.thread_id}


class BaseMessage(ThreadItem):
    """A message of a thread. Only its metadata can change after creation."""

    role = models.CharField(max_length=16, choices=[("user", "user"), ("assistant", "assistant")], default="user")
    content = models.TextField(blank=True, default="", help_text="The text of the message.")
    status = models.CharField(max_length=16, blank=True, default="", editable=False)
    assistant_id = models.CharField(max_length=64, blank=True, null=True, editable=False)
    run_id = models.CharField(max_length=64, blank=True, null=True, editable=False)

    remote_fields = ("thread_id", "role", "status", "assistant_id", "run_id")
    thread_resource = "messages"

    class Meta:
        abstract = True

    def create_payload(self, metadata: dict[str, str]) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "metadata": metadata}

    def remote_values(self, obj: Any) -> dict[str, Any]:
        values = super().remote_values(obj)
        values["content"] = text_of(obj, "\n")
        return values


class BaseRun(ThreadItem):
    """A run of an assistant on a thread. Creating one starts it; only metadata can change."""

    assistant_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, blank=True, default="", editable=False)
    model = models.CharField(max_length=256, blank=True, default="", help_text="Blank: the assistant's model.")
    instructions = models.TextField(blank=True, null=True, help_text="Empty: the assistant's instructions.")
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.JSONField(null=True, blank=True, editable=False)

    remote_fields = ("thread_id", "assistant_id", "status", "model", "instructions")
    thread_resource = "runs"

    class Meta:
        abstract = True

    def create_payload(self, metadata: dict[str, str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"assistant_id": self.assistant_id, "metadata": metadata}
        if self.model:
            payload["model"] = self.model
        if self.instructions:
            payload["instructions"] = self.instructions
        return payload

    def remote_values(self, obj: Any) -> dict[str, Any]:
        values = super().remote_values(obj)
        values["started_at"] = from_unix(obj.started_at)
        values["completed_at"] = from_unix(obj.completed_at)
        values["last_error"] = obj.last_error.model_dump() if obj.last_error else None
        return values

    def delete(self, *args, **kwargs):
        raise NotSupportedError("Runs cannot be deleted in the Assistants API; cancel() one that is active.")

    async def adelete(self, *args, **kwargs):
        raise NotSupportedError("Runs cannot be deleted in the Assistants API; cancel() one that is active.")

    def cancel(self) -> None:
        self.apply_remote(self.resource(get_client()).cancel(self.id, **self.scope()))
        self._store_mirror()


# The concrete defaults. They have no docstrings: an assistant's docstring is
# its default instructions, and these are meant to carry none.


class Assistant(BaseAssistant):
    pass


class Thread(BaseThread):
    pass


class Message(BaseMessage):
    pass


class Run(BaseRun):
    pass
