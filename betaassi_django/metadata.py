"""Typed Django field values <-> Assistants-API metadata strings.

Metadata holds at most 16 pairs, keys of at most 64 characters and string
values of at most 512. A model's custom fields are stored under their field
name; a value longer than 512 characters is split over ``name``, ``name.1``,
``name.2``... The reserved key ``betaassi_type`` names the model
(``app_label.ModelName``). Every supported type round-trips exactly:

============================  ===========================================
field                          stored as
============================  ===========================================
CharField, TextField, ...      the string itself
IntegerField family            decimal digits (``-12``)
BooleanField                   ``true`` / ``false``
FloatField                     ``repr`` (shortest exact form)
DecimalField                   ``str(Decimal)`` (keeps the exponent: ``1.50``)
DateField                      ISO 8601 (``2026-11-25``)
DateTimeField                  ISO 8601 in UTC with microseconds and offset
TimeField                      ISO 8601 (``13:45:00.000001``)
DurationField                  whole microseconds (``90000000``)
UUIDField                      canonical hex with dashes
JSONField                      compact JSON (lists of small records, dicts...)
============================  ===========================================

``None`` (a nullable field) is the absence of its key. The keys and encodings are a
contract other processes rely on: docs/events.md (keys) and docs/models.md (encodings).
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import models

TYPE_KEY = "betaassi_type"
#: The keys of the publish queue (docs/events.md), on an assistant: its publish thread and its registry's root;
#: on a session thread: the session and the assistant it was created for. Here, below both the publish queue
#: that writes them and the embedded API whose limited keys reach threads through them (``assistants_api.scopes``).
PUBLISH_KEY = "betaassi_publish"
REGISTRY_KEY = "betaassi_registry"
SESSION_THREAD_KEY = "betaassi_session"
SESSION_ASSISTANT_KEY = "betaassi_assistant"
#: On an assistant: the deployment whose processors apply its queue (absent: "default"; docs/deployment.md).
OWNER_KEY = "betaassi_deployment"
#: On a publish thread: ``consumer:<name>`` names the thread that keeps that consumer's position (docs/events.md).
CONSUMER_KEY_PREFIX = "consumer:"
MAX_PAIRS = 16
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 512
#: Longest chunk suffix a field can need (``.15``), so field names stay short enough.
MAX_SUFFIX_LENGTH = len(f".{MAX_PAIRS - 1}")


@dataclass(frozen=True)
class Codec:
    encode: Callable[[object], str]
    decode: Callable[[str], object]


def _encode_datetime(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return value.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def _encode_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("floats must be finite")
    return repr(float(value))


def _encode_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _decode_bool(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError(f"not a boolean: {raw!r}")
    return raw == "true"


_STRING = Codec(str, str)
_CODECS: list[tuple[type[models.Field], Codec]] = [
    # Order matters: subclasses before their bases.
    (models.BooleanField, Codec(lambda v: "true" if v else "false", _decode_bool)),
    (models.DateTimeField, Codec(_encode_datetime, datetime.datetime.fromisoformat)),
    (models.DateField, Codec(lambda v: v.isoformat(), datetime.date.fromisoformat)),
    (models.TimeField, Codec(lambda v: v.isoformat(timespec="microseconds"), datetime.time.fromisoformat)),
    (
        models.DurationField,
        Codec(
            lambda v: str(v // datetime.timedelta(microseconds=1)),
            lambda raw: datetime.timedelta(microseconds=int(raw)),
        ),
    ),
    (models.DecimalField, Codec(str, decimal.Decimal)),
    (models.FloatField, Codec(_encode_float, float)),
    (models.IntegerField, Codec(lambda v: str(int(v)), int)),
    (models.UUIDField, Codec(str, uuid.UUID)),
    (models.JSONField, Codec(_encode_json, json.loads)),
    (models.GenericIPAddressField, _STRING),
    (models.CharField, _STRING),
    (models.TextField, _STRING),
]


def codec_for(field: models.Field) -> Codec | None:
    """The codec of a concrete field, or None when metadata cannot hold it."""
    if field.is_relation or isinstance(field, (models.FileField, models.BinaryField, models.AutoField)):
        return None
    for field_class, codec in _CODECS:
        if isinstance(field, field_class):
            return codec
    return None


def chunk_keys(name: str, count: int) -> list[str]:
    return [name] + [f"{name}.{index}" for index in range(1, count)]


def max_keys(field: models.Field) -> int | None:
    """The most keys a value of this field can take, or None when unbounded."""
    if isinstance(field, (models.CharField,)) and field.max_length:
        return max(1, math.ceil(field.max_length / MAX_VALUE_LENGTH))
    if isinstance(field, (models.TextField, models.JSONField)):
        return None
    return 1


def encode_field(field: models.Field, value: object) -> dict[str, str]:
    """One field's value as metadata pairs (none for ``None``)."""
    if value is None:
        return {}
    codec = codec_for(field)
    if codec is None:
        raise ValidationError({field.name: f"{field.__class__.__name__} cannot be stored in metadata."})
    try:
        text = codec.encode(value)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValidationError({field.name: f"Cannot store {value!r} in metadata: {exc}."}) from exc
    if "\x00" in text:
        raise ValidationError({field.name: "Null characters are not allowed."})
    pieces = [text[i : i + MAX_VALUE_LENGTH] for i in range(0, len(text), MAX_VALUE_LENGTH)] or [""]
    return dict(zip(chunk_keys(field.name, len(pieces)), pieces, strict=True))


def decode_field(field: models.Field, metadata: dict[str, str]) -> object:
    """One field's value from metadata; a missing key is ``None`` (or the default of a non-null field)."""
    if field.name not in metadata:
        return None if field.null else field.get_default()
    text = metadata[field.name]
    index = 1
    while f"{field.name}.{index}" in metadata:
        text += metadata[f"{field.name}.{index}"]
        index += 1
    codec = codec_for(field)
    if codec is None:
        raise ValueError(f"{field.name}: {field.__class__.__name__} cannot be read from metadata")
    return codec.decode(text)


def owned_keys(metadata: dict[str, str], names: Iterable[str]) -> set[str]:
    """The keys of ``metadata`` that belong to the given fields (with their chunks) or to the type."""
    names = set(names)
    owned = {TYPE_KEY} & set(metadata)
    for key in metadata:
        base, _, suffix = key.rpartition(".")
        if key in names or (base in names and suffix.isdigit()):
            owned.add(key)
    return owned


def encode(
    fields: Iterable[models.Field], instance: object, type_label: str, keep: dict[str, str] | None = None
) -> dict[str, str]:
    """The whole metadata of an instance: its type, its fields, and ``keep``'s foreign keys.

    ``keep`` is the metadata last read from the backend: keys that belong to
    no field of this model (written by another process) are carried over.
    Raises ``ValidationError`` naming the fields when the result cannot fit.
    """
    fields = list(fields)
    metadata: dict[str, str] = {}
    errors: dict[str, list[str]] = {}
    for field in fields:
        try:
            metadata.update(encode_field(field, getattr(instance, field.attname)))
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    if keep:
        owned = owned_keys(keep, (f.name for f in fields))  # once, not once per key
        foreign = {k: v for k, v in keep.items() if k not in owned}
        metadata = {**foreign, **metadata}
    metadata[TYPE_KEY] = type_label
    if len(metadata) > MAX_PAIRS:
        sizes = {f.name: len(encode_field(f, getattr(instance, f.attname))) for f in fields}
        big = sorted((name for name, size in sizes.items() if size > 1), key=lambda n: -sizes[n])
        names = big or [f.name for f in fields]
        message = (
            f"These values need {len(metadata)} metadata keys; at most {MAX_PAIRS} fit "
            f"(one is '{TYPE_KEY}'). Values over {MAX_VALUE_LENGTH} characters take one key per "
            f"{MAX_VALUE_LENGTH} characters."
        )
        raise ValidationError({name: message for name in names})
    return metadata


def decode(fields: Iterable[models.Field], metadata: dict[str, str]) -> dict[str, object]:
    """Field name -> value for every field, from a backend object's metadata."""
    return {field.attname: decode_field(field, metadata) for field in fields}
