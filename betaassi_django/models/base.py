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
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any, ClassVar

import openai
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import NotSupportedError, models

from betaassi_django.client import get_async_client, get_client
from betaassi_django.metadata import TYPE_KEY, decode, encode

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


def from_unix(value: int | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromtimestamp(value, tz=datetime.UTC)


class RemoteModel(models.Model):
    """Common base of the four entities. Subclass an entity base, not this."""

    id = models.CharField(
        primary_key=True, max_length=64, editable=False, blank=True, help_text="The backend object's id."
    )
    created_at = models.DateTimeField(null=True, editable=False)
    metadata = models.JSONField(
        default=dict, editable=False, blank=True, help_text="The backend object's metadata as last read."
    )
    synced_at = models.DateTimeField(null=True, editable=False, help_text="When the mirror last matched.")

    objects = RemoteManager()

    #: Mirror field -> attribute of the backend object, for the entity's core fields.
    remote_fields: ClassVar[tuple[str, ...]] = ()
    #: The core fields sent on create and modify.
    writable_fields: ClassVar[tuple[str, ...]] = ()

    class Meta:
        abstract = True

    # -- which fields live in metadata -------------------------------------

    @classmethod
    def core_field_names(cls) -> set[str]:
        """Fields declared by betaassi-django's abstract bases (not stored in metadata)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            meta = getattr(klass, "_meta", None)
            if meta is not None and meta.abstract and klass.__module__.startswith("betaassi_django.models"):
                names.update(f.name for f in meta.local_fields)
        return names

    @classmethod
    def metadata_fields(cls) -> list[models.Field]:
        """The subclass's own fields, each persisted into the backend object's metadata (found once per class)."""
        if "_metadata_fields" not in cls.__dict__:
            core = cls.core_field_names()
            cls._metadata_fields = [f for f in cls._meta.concrete_fields if f.name not in core]
        return list(cls._metadata_fields)

    @classmethod
    def reserved_keys(cls) -> tuple[str, ...]:
        """Metadata keys the app itself uses on this entity (not available to fields)."""
        return (TYPE_KEY,)

    @classmethod
    def type_label(cls) -> str:
        """The value of the ``betaassi_type`` metadata key for this class."""
        return cls._meta.label

    # -- hooks each entity provides --------------------------------------

    @classmethod
    def resource(cls, api) -> Any:
        """The SDK resource of this entity on ``api`` (an OpenAI or AsyncOpenAI client)."""
        raise NotImplementedError

    def scope(self) -> dict[str, str]:
        """Ids that address this object besides its own (e.g. ``thread_id``)."""
        return {}

    def create_payload(self, metadata: dict[str, str]) -> dict[str, Any]:
        return self.modify_payload(metadata)

    def modify_payload(self, metadata: dict[str, str]) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.writable_fields}, "metadata": metadata}

    # -- validation and encoding --------------------------------------------

    def encode_metadata(self) -> dict[str, str]:
        return encode(self.metadata_fields(), self, self.type_label(), keep=self.metadata or None)

    def validate_for_backend(self) -> dict[str, Any]:
        """Check every field (as ``full_clean`` does, except uniqueness) and that metadata fits.

        Raises ``ValidationError`` naming the fields before any backend call.
        """
        errors: dict[str, list[str]] = {}
        try:
            self.clean_fields(exclude={"id", "created_at", "metadata", "synced_at"})
        except ValidationError as exc:
            errors.update(exc.message_dict)
        for name in (*self.writable_fields, "content"):
            value = getattr(self, name, None)
            if isinstance(value, str) and "\x00" in value:
                errors.setdefault(name, []).append("Null characters are not allowed.")
        if errors:
            raise ValidationError(errors)
        try:
            metadata = self.encode_metadata()
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
            metadata = {}
        if errors:
            raise ValidationError(errors)
        return metadata

    # -- applying backend objects -------------------------------------------

    def remote_values(self, obj: Any) -> dict[str, Any]:
        """The core field values of a backend object (an SDK model), as the mirror stores them."""
        return {name: getattr(obj, name) for name in self.remote_fields}

    def apply_remote(self, obj: Any) -> None:
        """Copy a backend object onto this instance: core fields, then metadata fields."""
        self.id = obj.id
        self.created_at = from_unix(getattr(obj, "created_at", None))
        values = self.remote_values(obj)
        for name, value in values.items():
            setattr(self, name, value)
        self.metadata = dict(obj.metadata or {})
        for attname, value in decode(self.metadata_fields(), self.metadata).items():
            setattr(self, attname, value)
        self.synced_at = datetime.datetime.now(tz=datetime.UTC)
        self._snapshot = self._payload({name: values[name] for name in self.writable_fields}, self.metadata)

    @staticmethod
    def _payload(core: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
        return {**core, "metadata": dict(metadata)}

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        loaded = instance.__dict__  # a deferred field (only(), defer()) is not read here: reading it reloads
        if "metadata" not in loaded or any(n not in loaded for n in cls.writable_fields):
            instance._snapshot = None  # nothing known of what the backend held: a save sends every field
            return instance
        if TYPE_KEY in (instance.metadata or {}):
            # Values come from the backend's own strings, exactly (a database column can round off:
            # jsonb reads a large float back as an int, SQLite keeps 15 significant digits).
            loaded = [f for f in cls.metadata_fields() if f.attname in instance.__dict__]
            for attname, value in decode(loaded, instance.metadata).items():
                setattr(instance, attname, value)
        # What the backend held when the mirror was written: used to undo a modify.
        instance._snapshot = cls._payload(
            {n: getattr(instance, n) for n in cls.writable_fields}, instance.metadata or {}
        )
        return instance

    @classmethod
    def from_remote(cls, obj: Any):
        instance = cls()
        instance.apply_remote(obj)
        return instance

    @classmethod
    def handles(cls, obj: Any) -> bool:
        """Whether a backend object is of this class (its ``betaassi_type``)."""
        return (obj.metadata or {}).get(TYPE_KEY) == cls.type_label()

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
