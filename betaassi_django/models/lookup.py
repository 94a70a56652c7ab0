"""Finding assistants among the project's assistant classes (every concrete ``BaseAssistant`` subclass).

One home for the lookup that the pages, the admin and the quotas share: an assistant id names a row of
exactly one class's table, found by asking each class in turn.
"""

from __future__ import annotations

from django.apps import apps

from .assistants import BaseAssistant


def assistant_models() -> list[type[BaseAssistant]]:
    """Every concrete assistant class of the project."""
    return [m for m in apps.get_models() if issubclass(m, BaseAssistant)]


def all_assistants() -> list[BaseAssistant]:
    """Every mirrored assistant of every class, by name (case-insensitive) then id: as the pages and the admin
    list them."""
    return sorted((a for model in assistant_models() for a in model.objects.all()),
                  key=lambda a: ((a.name or "").lower(), a.id))


def find_assistant(assistant_id: str) -> BaseAssistant | None:
    """The mirrored assistant with this id, as an instance of its own class; None when none has it."""
    for model in assistant_models():
        found = model.objects.filter(id=assistant_id).first()
        if found is not None:
            return found
    return None
