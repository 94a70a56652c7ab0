"""Model checks (``Tags.models``): a model whose fields cannot fit in metadata is refused at start-up.

The ids and messages are listed in docs/configuration.md ("System checks").
"""

from __future__ import annotations

from django.apps import apps
from django.core import checks

from betaassi_django import metadata
from betaassi_django.models import RemoteModel


def _field_errors(model, field, available: int) -> list[checks.CheckMessage]:
    where = f"{model._meta.label}.{field.name}"
    errors = []
    if metadata.codec_for(field) is None:
        errors.append(
            checks.Error(
                f"{where}: a {field.__class__.__name__} cannot be stored in backend metadata.",
                hint="Use a field type from betaassi_django.metadata (str, int, bool, float, Decimal, date, datetime, "
                "time, duration, UUID, JSON), or keep this data in a model of its own.",
                obj=field,
                id="betaassi.E002",
            )
        )
    if len(field.name) + metadata.MAX_SUFFIX_LENGTH > metadata.MAX_KEY_LENGTH or "." in field.name:
        errors.append(
            checks.Error(
                f"{where}: the field name is its metadata key and must be at most "
                f"{metadata.MAX_KEY_LENGTH - metadata.MAX_SUFFIX_LENGTH} characters without dots.",
                hint=f"Rename the field to at most {metadata.MAX_KEY_LENGTH - metadata.MAX_SUFFIX_LENGTH} characters "
                "without dots (keep the column with db_column='...' if the table has data).",
                obj=field,
                id="betaassi.E003",
            )
        )
    if field.name == metadata.TYPE_KEY:
        errors.append(
            checks.Error(
                f"{where}: '{metadata.TYPE_KEY}' is a reserved metadata key (it routes each backend object to its "
                "model).",
                hint=f"Rename the field (any name but '{metadata.TYPE_KEY}').",
                obj=field,
                id="betaassi.E006",
            )
        )
    needed = metadata.max_keys(field)
    if needed is not None and needed > available:
        errors.append(
            checks.Error(
                f"{where}: max_length={field.max_length} needs up to {needed} metadata keys "
                f"({metadata.MAX_VALUE_LENGTH} characters each) but only {available} are free for it.",
                hint=f"Lower max_length to at most {available * metadata.MAX_VALUE_LENGTH}, or use fewer fields.",
                obj=field,
                id="betaassi.E004",
            )
        )
    return errors


def check_model(model) -> list[checks.CheckMessage]:
    """Why a RemoteModel subclass's fields cannot live in metadata (empty when they can)."""
    if model._meta.proxy:
        # betaassi_type routes each backend object to one model, and a model's sync drops the mirror rows of
        # objects that are not of its type: a proxy shares its concrete model's table, so each would drop
        # the other's rows.
        return [checks.Error(
            f"{model._meta.label} is a proxy model; a backend entity model needs a table of its own.",
            hint=f"Subclass {model._meta.concrete_model.__name__} without proxy = True (the table may hold "
            "nothing but the mirror), or keep the behaviour in functions.",
            obj=model, id="betaassi.E005")]
    messages: list[checks.CheckMessage] = []
    fields = model.metadata_fields()
    reserved = model.reserved_keys()
    free = metadata.MAX_PAIRS - len(reserved)
    if len(fields) > free:
        return [checks.Error(
            f"{model._meta.label} has {len(fields)} metadata fields; at most {free} fit "
            f"({metadata.MAX_PAIRS} keys; reserved: {', '.join(reserved)}).",
            hint="Move some fields into a model of their own, or combine them in a JSONField.",
            obj=model, id="betaassi.E001")]
    for field in fields:
        messages += _field_errors(model, field, free - (len(fields) - 1))
    worst = [metadata.max_keys(f) for f in fields]
    if None not in worst and sum(worst) > free:
        messages.append(checks.Warning(
            f"{model._meta.label}: values at their max_length need {sum(worst)} metadata keys but "
            f"only {free} are free; save() raises a ValidationError naming the fields when they overflow.",
            hint=f"Lower some max_length values so that together they need at most {free} keys (a key holds "
            f"{metadata.MAX_VALUE_LENGTH} characters).", obj=model, id="betaassi.W001"))
    return messages


def check_metadata_fields(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every RemoteModel subclass of the checked apps (all apps when none are named)."""
    configs = app_configs or apps.get_app_configs()
    return [
        message
        for config in configs
        for model in config.get_models()
        if issubclass(model, RemoteModel)
        for message in check_model(model)
    ]
