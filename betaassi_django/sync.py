"""Re-read backend objects into their mirrors (``manage.py sync_from_backend``)."""

from __future__ import annotations

import logging
from collections import Counter

import openai
from django.apps import apps

from betaassi_django.client import get_client
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.models import BaseAssistant, RemoteModel

logger = logging.getLogger("betaassi_django.sync")


def remote_models() -> list[type[RemoteModel]]:
    return [m for m in apps.get_models() if issubclass(m, RemoteModel)]


def sync_assistants() -> Counter:
    """List every backend assistant once; mirror each into the class its ``betaassi_type`` names."""
    counts: Counter = Counter()
    classes = {m.type_label(): m for m in remote_models() if issubclass(m, BaseAssistant)}
    seen: dict[type, set[str]] = {m: set() for m in classes.values()}
    for obj in get_client().beta.assistants.list(limit=100, order="asc"):
        model = classes.get((obj.metadata or {}).get(TYPE_KEY))
        if model is None:
            counts["assistants of other types"] += 1
            continue
        model.from_remote(obj)._store_mirror()
        seen[model].add(obj.id)
        counts[f"{model.type_label()} synced"] += 1
    for model, ids in seen.items():
        for gone in model.objects.exclude(pk__in=ids):
            gone.forget()
            counts[f"{model.type_label()} removed"] += 1
    return counts


def sync_known(model: type[RemoteModel]) -> Counter:
    """Re-read every mirrored object of a model that cannot be listed; drop those gone from the backend."""
    counts: Counter = Counter()
    for instance in model.objects.all().iterator():
        try:
            instance.refresh_from_backend()
            counts[f"{model.type_label()} synced"] += 1
        except openai.NotFoundError:
            instance.forget()
            counts[f"{model.type_label()} removed"] += 1
    return counts


def sync_from_backend() -> Counter:
    counts = sync_assistants()
    for model in remote_models():
        if not issubclass(model, BaseAssistant):
            counts += sync_known(model)
    return counts
