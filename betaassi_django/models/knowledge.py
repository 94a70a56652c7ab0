"""Knowledge declared on an assistant class: files to upload into a vector store, or a vector store's id.

::

    class Support(BaseAssistant):
        knowledge = ["docs/handbook.pdf", "docs/returns.md"]   # paths relative to settings.BASE_DIR
        # or: knowledge = ["vs_abc123"]                          # a vector store that already exists

Everything goes through the app's ``openai`` client (``client.files.create``, ``client.vector_stores.create``),
so it works against the embedded backend and a remote Assistants host alike. The assistant's metadata key
``betaassi_knowledge`` remembers what was uploaded: ``<vector store id>:<fingerprint of the declared files'
names and bytes>``. A save whose fingerprint matches uploads nothing; one whose files changed uploads them into a
new vector store, points the assistant at it, then deletes the old store and the files uploaded for it. The
Assistants API attaches at most one vector store to an assistant, so the declaration holds files or one store id,
not both.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import openai
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("betaassi_django.models")

KNOWLEDGE_KEY = "betaassi_knowledge"


@dataclass
class Knowledge:
    """What a save sends (``vector_store_id``) and what to clean up after it succeeds or fails."""

    vector_store_id: str
    marker: str
    created_store: str | None = None
    uploaded: list[str] = field(default_factory=list)
    replaced_store: str | None = None


def parse(owner: type, entries: object) -> tuple[list[Path], str | None]:
    """The declared files (absolute paths) and store id; ``ImproperlyConfigured`` naming the class for a
    declaration the Assistants API cannot serve."""
    where = f"{owner.__module__}.{owner.__qualname__}.knowledge"
    if not isinstance(entries, list | tuple) or not all(isinstance(e, str) and e.strip() for e in entries):
        raise ImproperlyConfigured(f"{where} must be a list of file paths or vector store ids (strings).")
    store_ids = [e for e in entries if e.startswith("vs_")]
    paths = [Path(settings.BASE_DIR) / e for e in entries if not e.startswith("vs_")]
    if len(store_ids) > 1 or (store_ids and paths):
        raise ImproperlyConfigured(
            f"{where} declares {len(store_ids)} vector store id(s) and {len(paths)} file(s): an assistant has at "
            "most one vector store, so declare either files (uploaded into one store) or one vector store id.")
    return paths, (store_ids[0] if store_ids else None)


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise ImproperlyConfigured(f"Knowledge file {path} does not exist (paths are relative to BASE_DIR).")
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:24]


def prepare(api: openai.OpenAI, owner: type, metadata: dict) -> Knowledge | None:
    """Upload the declared files if they changed since the last save (None: nothing declared)."""
    entries = getattr(owner, "knowledge", None)
    if not entries:
        return None
    paths, store_id = parse(owner, entries)
    current = (metadata or {}).get(KNOWLEDGE_KEY, "")
    previous, _, _ = current.partition(":")
    if store_id is not None:
        # A store of the project's own: nothing to upload; one the class made earlier is replaced.
        return Knowledge(store_id, store_id, replaced_store=previous if previous and previous != store_id
                         and ":" in current else None)
    marker_digest = _fingerprint(paths)
    if current.endswith(f":{marker_digest}") and previous:
        return Knowledge(previous, current)
    made = Knowledge("", "", replaced_store=previous if ":" in current else None)
    try:
        for path in paths:
            with path.open("rb") as handle:
                made.uploaded.append(api.files.create(file=(path.name, handle), purpose="assistants").id)
        store = api.vector_stores.create(name=f"{owner._meta.label} knowledge", file_ids=made.uploaded)
    except Exception:
        undo(api, made)
        raise
    made.vector_store_id = made.created_store = store.id
    made.marker = f"{store.id}:{marker_digest}"
    return made


def apply(knowledge: Knowledge, payload: dict) -> dict:
    """The assistant's create/modify payload with ``file_search`` in its tools and the store in its resources."""
    tools = list(payload.get("tools") or [])
    if not any(tool.get("type") == "file_search" for tool in tools):
        tools.append({"type": "file_search"})
    return {**payload, "tools": tools,
            "tool_resources": {"file_search": {"vector_store_ids": [knowledge.vector_store_id]}}}


def undo(api: openai.OpenAI, knowledge: Knowledge) -> None:
    """The save failed: delete what ``prepare`` made for it."""
    _delete(api, knowledge.created_store, knowledge.uploaded)


def finish(api: openai.OpenAI, knowledge: Knowledge) -> None:
    """The save succeeded: delete the store it replaced, with the files uploaded for that store."""
    if knowledge.replaced_store:
        forget(api, knowledge.replaced_store)


def forget(api: openai.OpenAI, store_id: str) -> None:
    """Delete a store the class made, and its files (they were uploaded for it)."""
    try:
        file_ids = [f.id for f in api.vector_stores.files.list(store_id, limit=100).data]
    except openai.NotFoundError:
        return
    except openai.APIError:
        logger.exception("could not list the files of knowledge store %s to delete them", store_id)
        file_ids = []
    _delete(api, store_id, file_ids)


def _delete(api: openai.OpenAI, store_id: str | None, file_ids: list[str]) -> None:
    calls = ([(api.vector_stores.delete, store_id)] if store_id else []) + [(api.files.delete, f) for f in file_ids]
    for call, object_id in calls:
        try:
            call(object_id)
        except openai.NotFoundError:
            pass
        except openai.APIError:  # left behind, not lost: the next sync or an operator deletes it
            logger.exception("could not delete knowledge object %s", object_id)
