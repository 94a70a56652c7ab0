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


#: What a sync did with one object: mirrored a new one, refreshed a mirror, dropped a mirror gone from the
#: backend, or skipped an assistant of a type no model here has.
OUTCOMES = ("created", "updated", "removed", "skipped")


class Progress:
    """What a sync reports as it goes, for ``manage.py sync_from_backend`` to show; this base ignores it (the
    admin's sync shows only its summary). ``kind`` is what is being read: "assistants" (one listing for every
    assistant model) or the label of a model whose objects are re-read one by one."""

    def started(self, kind: str, total: int | None) -> None:
        """Reading ``kind`` begins; ``total`` objects are known, or None for a listing."""

    def object(self, kind: str, label: str, outcome: str) -> None:
        """One object of model ``label`` (or "other types") had ``outcome``, one of OUTCOMES."""

    def finished(self, kind: str) -> None:
        """Every object of ``kind`` is done."""


def remote_models() -> list[type[RemoteModel]]:
    return [m for m in apps.get_models() if issubclass(m, RemoteModel)]


def sync_assistants(progress: Progress | None = None) -> Counter:
    """List every backend assistant once; mirror each into the class its ``betaassi_type`` names."""
    progress = progress or Progress()
    counts: Counter = Counter()
    classes = {m.type_label(): m for m in remote_models() if issubclass(m, BaseAssistant)}
    seen: dict[type, set[str]] = {m: set() for m in classes.values()}
    mirrored = {m: set(m.objects.values_list("pk", flat=True)) for m in classes.values()}
    progress.started("assistants", None)
    for obj in get_client().beta.assistants.list(limit=100, order="asc"):
        model = classes.get((obj.metadata or {}).get(TYPE_KEY))
        if model is None:
            counts["assistants of other types"] += 1
            progress.object("assistants", "other types", "skipped")
            continue
        model.from_remote(obj)._store_mirror()
        seen[model].add(obj.id)
        counts[f"{model.type_label()} synced"] += 1
        progress.object("assistants", model.type_label(), "updated" if obj.id in mirrored[model] else "created")
    for model, ids in seen.items():
        for gone in model.objects.exclude(pk__in=ids):
            gone.forget()
            counts[f"{model.type_label()} removed"] += 1
            progress.object("assistants", model.type_label(), "removed")
    progress.finished("assistants")
    return counts


def sync_known(model: type[RemoteModel], progress: Progress | None = None) -> Counter:
    """Re-read every mirrored object of a model that cannot be listed; drop those gone from the backend."""
    progress = progress or Progress()
    label = model.type_label()
    counts: Counter = Counter()
    progress.started(label, model.objects.count())
    for instance in model.objects.all().iterator():
        try:
            instance.refresh_from_backend()
            counts[f"{label} synced"] += 1
            progress.object(label, label, "updated")
        except openai.NotFoundError:
            instance.forget()
            counts[f"{label} removed"] += 1
            progress.object(label, label, "removed")
    progress.finished(label)
    return counts


def sync_from_backend(progress: Progress | None = None) -> Counter:
    """Every assistant, then every mirrored object of the other models; counts keyed "<label> synced" and
    "<label> removed" (and "assistants of other types")."""
    counts = sync_assistants(progress)
    for model in remote_models():
        if not issubclass(model, BaseAssistant):
            counts += sync_known(model, progress)
    return counts
