"""Reading and writing the publish queue and the registry in the backend (sync client)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import openai
from django.http import QueryDict
from openai.types.beta.threads import Message

from betaassi_django.client import calls_store_directly
from betaassi_django.metadata import PUBLISH_KEY, REGISTRY_KEY, SESSION_ASSISTANT_KEY, SESSION_THREAD_KEY, TYPE_KEY
from betaassi_django.registry.pages import Page, page_threads
from betaassi_django.registry.root import Root, new_key

T = TypeVar("T")

PUBLISH_TYPE = "betaassi.publish"


def session_thread_tags(assistant_id: str, session_id: str) -> dict[str, str]:
    """A session thread's tags: the session and the assistant it was created for (by the publisher). The processor
    accepts a thread in ``session.create`` and deletes a thread only when both tags name that session."""
    return {SESSION_THREAD_KEY: session_id, SESSION_ASSISTANT_KEY: assistant_id}


def tagged_for(metadata: dict[str, str] | None, assistant_id: str, session_id: str, *, legacy: bool = False) -> bool:
    """Whether a thread's metadata says it was created for this session of this assistant.

    ``legacy`` also accepts a thread tagged with the session only (made before threads carried the
    assistant), for a record already in the registry.
    """
    metadata = metadata or {}
    if metadata.get(SESSION_THREAD_KEY) != session_id:
        return False
    owner = metadata.get(SESSION_ASSISTANT_KEY)
    return owner == assistant_id or (legacy and owner is None)


def queue_ids(assistant) -> tuple[str, str]:
    """The assistant's publish thread and registry root, from its metadata; ``ValueError`` when it has none."""
    metadata = assistant.metadata or {}
    if not metadata.get(PUBLISH_KEY) or not metadata.get(REGISTRY_KEY):
        raise ValueError(f"{assistant} has no publish queue; save it first")
    return metadata[PUBLISH_KEY], metadata[REGISTRY_KEY]


def publish_thread(api: openai.OpenAI, publish_id: str, *, after: str | None = None, order: str = "asc",
                   limit: int = 100):
    """The publish thread's events after ``after`` (from the start if None): one home for reading it. A cursor
    page: ``.data`` is this page, iterating it reads on to the end; each message's text is an event body."""
    return api.beta.threads.messages.list(publish_id, order=order, limit=limit, after=after or openai.omit)


class _Embedded(NamedTuple):
    store: Any
    serializers: Any
    validate_body: Callable[[str, dict], dict]


def _here_or_request(api: openai.OpenAI, direct: Callable[[_Embedded], T], request: Callable[[], T]) -> T:
    """``direct`` on the embedded API's store, serializers and request validation when ``api`` is this process's
    bare in-process client (``client.calls_store_directly``: not a wrapped one, which counts or records its
    requests), as the request's view would call them (the body validated against the same schema), without
    building, routing, encoding and parsing a request: about two thirds of such a request's CPU. Otherwise, and
    when the store refuses or fails, ``request()``: the caller gets the SDK's own error, as ever.

    The registry's threads are read and written all the time by the processor (its root at every drain, a head
    and the root at every batch). The embedded API is imported only here: a project on a remote backend does not
    install its app, and its models must not load.
    """
    if calls_store_directly(api):
        from betaassi_django.assistants_api import serializers, store
        from betaassi_django.assistants_api.validation import validate_body

        with contextlib.suppress(Exception):  # not found, refused, a failure: the request says which
            return direct(_Embedded(store, serializers, validate_body))
    return request()


class Listed(NamedTuple):
    """One page of a publish thread's events: the messages, and whether more follow."""

    data: list[Message]
    has_more: bool


def list_events(api: openai.OpenAI, publish_id: str, *, after: str | None, limit: int) -> Listed:
    """One page of the events after ``after`` (``messages.list``, ascending), for the processor's drain."""

    def direct(embedded: _Embedded) -> Listed:
        query = QueryDict(mutable=True)
        query.update({"order": "asc", "limit": str(limit), **({"after": after} if after else {})})
        listed = json.loads(embedded.store.list_messages(publish_id, query))
        return Listed([Message.model_validate(m) for m in listed["data"]], listed["has_more"])

    def request() -> Listed:
        page = publish_thread(api, publish_id, after=after, limit=limit)
        return Listed(page.data, page.has_more)

    return _here_or_request(api, direct, request)


def create_queue(api: openai.OpenAI) -> dict[str, str]:
    """A new assistant's publish thread and empty registry (root and one page): its reserved keys."""
    publish = api.beta.threads.create(metadata={TYPE_KEY: PUBLISH_TYPE})
    page = api.beta.threads.create(metadata=Page("").to_metadata())
    root = api.beta.threads.create(metadata=Root("", [page.id], key=new_key()).to_metadata())
    return {PUBLISH_KEY: publish.id, REGISTRY_KEY: root.id}


def _metadata(api: openai.OpenAI, thread_id: str) -> dict[str, str]:
    """A thread's metadata (``threads.retrieve``)."""
    return _here_or_request(api, lambda embedded: dict(embedded.store.get_thread(thread_id).metadata or {}),
                            lambda: api.beta.threads.retrieve(thread_id).metadata or {})


def read_assistant(api: openai.OpenAI, assistant_id: str) -> openai.types.beta.Assistant:
    """An assistant (``assistants.retrieve``), as the SDK's model (validated from what the view would send)."""
    return _here_or_request(api, lambda embedded: openai.types.beta.Assistant.model_validate(
        embedded.serializers.assistant(embedded.store.get_assistant(assistant_id))),
        lambda: api.beta.assistants.retrieve(assistant_id))


def read_metadata(api: openai.OpenAI, thread_id: str) -> dict[str, str]:
    """A registry thread's metadata (its root, a head, an overflow page)."""
    return _metadata(api, thread_id)


def write_metadata(api: openai.OpenAI, thread_id: str, metadata: dict[str, str]) -> None:
    """Replace a registry thread's metadata (``threads.update``)."""
    _here_or_request(api, lambda embedded: embedded.store.modify_thread(
        thread_id, embedded.validate_body("ModifyThreadRequest", {"metadata": dict(metadata)})),
        lambda: api.beta.threads.update(thread_id, metadata=metadata))


def create_thread(api: openai.OpenAI, metadata: dict[str, str]) -> str:
    """A new thread with ``metadata`` (``threads.create``: a registry page, a session's thread); its id."""
    return _here_or_request(api, lambda embedded: embedded.store.create_thread(
        embedded.validate_body("CreateThreadRequest", {"metadata": dict(metadata)}))["id"],
        lambda: api.beta.threads.create(metadata=metadata).id)


def load_page(api: openai.OpenAI, thread_id: str) -> Page:
    """One bucket: its head, then each of its overflow pages (1 + overflow pages reads)."""
    page = Page.from_metadata(thread_id, _metadata(api, thread_id))
    for _, overflow_id in page.directory:
        page.absorb(overflow_id, _metadata(api, overflow_id))
    return page


def load_registry(api: openai.OpenAI, root_id: str) -> tuple[Root, list[Page]]:
    """The root and every bucket (1 + pages reads, and one per overflow page)."""
    root = Root.from_metadata(root_id, _metadata(api, root_id))
    return root, [load_page(api, pid) for pid in root.page_ids]


#: Each registry's bucket directory (its root: key and page ids) as last read here, for ``find_record(cached=True)``.
#: A root's directory changes only when the table grows (at most 8 times: 256 buckets is the most it holds), and
#: the processor deletes the old heads before it records the batch that grew it: a head gone means "read again".
_directories: dict[str, Root] = {}
MAX_DIRECTORIES = 1024


def find_record(api: openai.OpenAI, root_id: str, session_id: str, *, cached: bool = False) -> dict | None:
    """One session's record: two reads (the root, then its bucket's head), three in an overflowed bucket.

    ``cached``: the root as read before in this process, when there is one: the bucket's head (and, overflowed,
    its one overflow page) only, 1 or 2 reads; a head that no longer exists (the table grew since) reads the
    root again.
    """
    root = _directories.get(root_id) if cached else None
    if root is not None:
        with contextlib.suppress(openai.NotFoundError):
            return _record_in(api, root, session_id)
    root = Root.from_metadata(root_id, _metadata(api, root_id))
    if cached:
        _directories[root_id] = root
        while len(_directories) > MAX_DIRECTORIES:
            _directories.pop(next(iter(_directories)))
    return _record_in(api, root, session_id)


def _record_in(api: openai.OpenAI, root: Root, session_id: str) -> dict | None:
    head_id = root.page_ids[root.bucket(session_id)]
    page = Page.from_metadata(head_id, _metadata(api, head_id))
    overflow_id = page.overflow_for(session_id)
    if overflow_id is not None:
        page.absorb(overflow_id, _metadata(api, overflow_id))
    return page.sessions.get(session_id)


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
            doomed += [thread for page in pages for thread in page_threads(page)] + [root.thread_id]
    if metadata.get(PUBLISH_KEY):
        doomed.append(metadata[PUBLISH_KEY])
    return doomed


def add_message(api: openai.OpenAI, thread_id: str, content: str, metadata: dict[str, str]) -> str:
    """A user message on ``thread_id`` (``messages.create``: an event on a publish thread); its id."""
    body = {"role": "user", "content": content, "metadata": metadata}
    return _here_or_request(api, lambda embedded: embedded.store.create_message(
        thread_id, embedded.validate_body("CreateMessageRequest", dict(body)))["id"],
        lambda: api.beta.threads.messages.create(thread_id, **body).id)


def delete_threads(api: openai.OpenAI, thread_ids: list[str]) -> None:
    """Delete threads; one already gone is fine."""
    for thread_id in thread_ids:
        with contextlib.suppress(openai.NotFoundError):
            _here_or_request(api, lambda embedded, thread_id=thread_id: embedded.store.delete_thread(thread_id),
                             lambda thread_id=thread_id: api.beta.threads.delete(thread_id))
