"""Reading and writing the publish queue and the registry in the backend (sync client)."""

from __future__ import annotations

import contextlib

import openai

from betaassi_django.metadata import TYPE_KEY

from .registry import Page, Root

PUBLISH_KEY = "betaassi_publish"
REGISTRY_KEY = "betaassi_registry"
PUBLISH_TYPE = "betaassi.publish"
SESSION_THREAD_KEY = "betaassi_session"


def create_queue(api: openai.OpenAI) -> dict[str, str]:
    """A new assistant's publish thread and empty registry (root and one page): its reserved keys."""
    publish = api.beta.threads.create(metadata={TYPE_KEY: PUBLISH_TYPE})
    page = api.beta.threads.create(metadata=Page("").to_metadata())
    root = api.beta.threads.create(metadata=Root("", [page.id]).to_metadata())
    return {PUBLISH_KEY: publish.id, REGISTRY_KEY: root.id}


def load_registry(api: openai.OpenAI, root_id: str) -> tuple[Root, list[Page]]:
    """The root and every page (1 + pages reads)."""
    root = Root.from_metadata(root_id, api.beta.threads.retrieve(root_id).metadata or {})
    pages = [Page.from_metadata(pid, api.beta.threads.retrieve(pid).metadata or {}) for pid in root.page_ids]
    return root, pages


def find_record(api: openai.OpenAI, root_id: str, session_id: str) -> dict | None:
    """One session's record: two reads (the root, then its page)."""
    root = Root.from_metadata(root_id, api.beta.threads.retrieve(root_id).metadata or {})
    page_id = root.page_ids[root.bucket(session_id)]
    return Page.from_metadata(page_id, api.beta.threads.retrieve(page_id).metadata or {}).sessions.get(session_id)


def delete_queue(api: openai.OpenAI, metadata: dict[str, str]) -> None:
    """Delete an assistant's publish thread, registry and session threads (already-gone ones are fine)."""
    delete_threads(api, queue_threads(api, metadata))


def queue_threads(api: openai.OpenAI, metadata: dict[str, str]) -> list[str]:
    """Every thread of an assistant's queue: session threads, registry pages and root, publish thread (reads)."""
    doomed: list[str] = []
    if metadata.get(REGISTRY_KEY):
        with contextlib.suppress(openai.NotFoundError):
            root, pages = load_registry(api, metadata[REGISTRY_KEY])
            doomed += [r["t"] for page in pages for r in page.sessions.values() if r.get("t")]
            doomed += [*root.page_ids, root.thread_id]
    if metadata.get(PUBLISH_KEY):
        doomed.append(metadata[PUBLISH_KEY])
    return doomed


def delete_threads(api: openai.OpenAI, thread_ids: list[str]) -> None:
    """Delete threads; one already gone is fine."""
    for thread_id in thread_ids:
        with contextlib.suppress(openai.NotFoundError):
            api.beta.threads.delete(thread_id)
