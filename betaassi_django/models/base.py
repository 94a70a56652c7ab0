"""``RemoteModel``: a Django model that mirrors one backend object.

The backend (the embedded API or a remote Assistants host) is the source of
truth; the local row is a mirror, like dj-stripe's. ``save()`` writes through:
it validates, creates or modifies the backend object (custom fields go into its
metadata through :mod:`betaassi_django.metadata`), then writes the mirror from
the backend's answer. If the mirror write fails after the backend call
succeeded, the backend change is compensated (a created object is deleted, a
modified one is put back as it was), so nothing is half-written; should the
compensation fail too, the next ``refresh_from_backend()`` or
``manage.py sync_from_backend`` repairs the mirror from the backend.

How fields map onto the backend object (metadata, payloads, validation, applying an
object the backend returned) is ``mapping``'s; this module makes the calls.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import openai
from asgiref.sync import sync_to_async
from django.db import NotSupportedError, models

from betaassi_django.client import get_async_client, get_client

from .mapping import MappedModel
from .mirror import update_row

logger = logging.getLogger("betaassi_django.models")


class RemoteQuerySet(models.QuerySet):
    """Querysets read mirrors; writes go through each object so the backend follows."""

    def update(self, **kwargs):
        raise NotSupportedError(
            f"{self.model.__name__} rows mirror backend objects: change them with save(), not update()."
        )

    def bulk_create(self, *args, **kwargs):
        raise NotSupportedError(f"{self.model.__name__}: create objects one by one with save() or create().")

    def bulk_update(self, *args, **kwargs):
        raise NotSupportedError(f"{self.model.__name__}: change objects one by one with save().")

    def delete(self):
        """Delete every object in the backend, then its mirror."""
        count = 0
        for obj in self:
            obj.delete()
            count += 1
        return count, {self.model._meta.label: count}

    async def acreate(self, **kwargs):
        obj = self.model(**kwargs)
        await obj.asave()
        return obj


RemoteManager = models.Manager.from_queryset(RemoteQuerySet)


_MISSING = object()


class RemoteModel(MappedModel):
    """Common base of the four entities: their backend writes and reads (the mapping is ``MappedModel``'s).
    Subclass an entity base, not this."""

    objects = RemoteManager()

    class Meta:
        abstract = True

    # -- write-through ----------------------------------------------------------

    def _write_mirror(self, created: bool = False) -> None:
        """Insert (a new object) or upsert the mirror row: one statement (``mirror.update_row`` for a row)."""
        if created or not update_row(self):
            super().save(force_insert=created)

    def _compensate(self, api, created: bool) -> None:
        resource = self.resource(api)
        try:
            if created:
                resource.delete(self.id, **self.scope())
            elif self._snapshot is None:
                raise ValueError("read with deferred fields: what the backend held is not known")
            else:
                resource.update(self.id, **self.scope(), **self._snapshot)
        except Exception:
            logger.exception(
                "could not undo the backend change of %s %s; refresh_from_backend() repairs the mirror",
                self.type_label(),
                self.id,
            )

    def changed_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The part of a modify payload that differs from what the backend held when this instance was read.

        A save sends only what changed, as ``save(update_fields=...)`` does for a row: a smaller request to
        validate and store, and a field another writer changed meanwhile is not overwritten with the stale
        value read before. An unchanged object still gets its one modify (its metadata), which returns the
        backend's current state to mirror.
        """
        snapshot = getattr(self, "_snapshot", None)
        if snapshot is None:  # built by hand with an id: nothing known about the backend's values
            return payload
        changed = {name: value for name, value in payload.items() if snapshot.get(name, _MISSING) != value}
        return changed or {"metadata": payload["metadata"]}

    def _backend_write(self, api):
        """The SDK call that creates or modifies this object (validated first), not yet made."""
        metadata = self.validate_for_backend()
        resource = self.resource(api)
        if not self.id:
            return resource.create(**self.scope(), **self.create_payload(metadata))
        return resource.update(self.id, **self.scope(), **self.changed_payload(self.modify_payload(metadata)))

    def _store_written(self, obj, created: bool) -> None:
        """Mirror what the backend answered; undo the backend change if the mirror write fails."""
        previous = getattr(self, "_snapshot", None)
        self.apply_remote(obj)
        try:
            self._write_mirror(created)
        except Exception:
            if previous is not None:
                self._snapshot = previous
            self._compensate(get_client(), created)
            if created:
                self.id = ""
            raise

    def save(self, *args, **kwargs) -> None:
        """Create or modify the backend object, then the mirror row."""
        created = not self.id
        self._store_written(self._backend_write(get_client()), created)

    async def asave(self, *args, **kwargs) -> None:
        """``save()`` for async code: the async client, and the mirror write in a thread."""
        created = not self.id
        obj = await self._backend_write(get_async_client())
        await sync_to_async(self._store_written)(obj, created)

    def delete(self, *args, **kwargs):
        """Delete the backend object, then the mirror row."""
        with contextlib.suppress(openai.NotFoundError):  # already gone in the backend: drop the mirror too
            self.resource(get_client()).delete(self.id, **self.scope())
        return super().delete(*args, **kwargs)

    async def adelete(self, *args, **kwargs):
        with contextlib.suppress(openai.NotFoundError):
            await self.resource(get_async_client()).delete(self.id, **self.scope())
        return await sync_to_async(super().delete)(*args, **kwargs)

    def forget(self) -> None:
        """Delete only the mirror row (the backend object is gone, or is not ours to delete)."""
        models.Model.delete(self)

    # -- reading ------------------------------------------------------------------

    def _store_mirror(self) -> None:
        self._write_mirror()

    @classmethod
    def retrieve(cls, object_id: str, **scope: str):
        """Read one object from the backend (one call) and refresh its mirror."""
        instance = cls.from_remote(cls.resource(get_client()).retrieve(object_id, **scope))
        instance._store_mirror()
        return instance

    @classmethod
    async def aretrieve(cls, object_id: str, **scope: str):
        obj = await cls.resource(get_async_client()).retrieve(object_id, **scope)
        instance = cls.from_remote(obj)
        await sync_to_async(instance._store_mirror)()
        return instance

    def refresh_from_backend(self) -> None:
        """Re-read this object from the backend and rewrite the mirror (remote wins)."""
        self.apply_remote(self.resource(get_client()).retrieve(self.id, **self.scope()))
        self._store_mirror()

    async def arefresh_from_backend(self) -> None:
        self.apply_remote(await self.resource(get_async_client()).retrieve(self.id, **self.scope()))
        await sync_to_async(self._store_mirror)()

    @classmethod
    def list_remote(cls, **scope: str) -> list:
        """Every backend object of this class (by ``betaassi_type``), 100 per call, mirrors refreshed."""
        pages = cls.resource(get_client()).list(limit=100, order="asc", **scope)
        found = [cls.from_remote(obj) for obj in pages if cls.handles(obj)]
        for instance in found:
            instance._store_mirror()
        return found

    @classmethod
    async def alist_remote(cls, **scope: str) -> list:
        pages = cls.resource(get_async_client()).list(limit=100, order="asc", **scope)
        found = [cls.from_remote(obj) async for obj in pages if cls.handles(obj)]
        for instance in found:
            await sync_to_async(instance._store_mirror)()
        return found

    def __str__(self) -> str:
        return self.id or f"unsaved {self.__class__.__name__}"
