"""``MappedModel``: how a Django model maps onto one backend object, before any backend call.

A mirror row and a backend object (an SDK model) are two shapes of the same entity: the core fields each entity
names (``remote_fields``, ``writable_fields``) and the subclass's own fields, persisted into the object's
metadata through :mod:`betaassi_django.metadata`. This module holds that mapping: which fields live in metadata,
the payloads sent, validation before a write, and copying a backend object onto an instance (with the snapshot
of what the backend held, for undoing a modify). ``base.RemoteModel`` builds the write-through and the reads on
it; neither needs the other's details to be read.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models

from betaassi_django.metadata import TYPE_KEY, decode, encode

__all__ = ["MappedModel", "from_unix"]


def from_unix(value: int | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromtimestamp(value, tz=datetime.UTC)


class MappedModel(models.Model):
    """The fields every entity mirrors, and their mapping onto a backend object. Subclass an entity base
    (``BaseThread``, ...), not this."""

    id = models.CharField(
        primary_key=True, max_length=64, editable=False, blank=True, help_text="The backend object's id."
    )
    created_at = models.DateTimeField(null=True, editable=False)
    metadata = models.JSONField(
        default=dict, editable=False, blank=True, help_text="The backend object's metadata as last read."
    )
    synced_at = models.DateTimeField(null=True, editable=False, help_text="When the mirror last matched.")

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
