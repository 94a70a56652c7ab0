"""What an API key may reach: every request's scope, checked before the store is touched.

A key is full access (the default), read-only (GET only), limited to a set of
assistants, or both. A key limited to assistants reaches:

- those assistants (listing shows only them; it may not create assistants);
- their threads: a thread whose metadata ``betaassi_assistant`` names one of
  them (the publisher tags every session thread so), with its messages, runs
  and steps; a thread it creates must carry that tag;
- their publish threads and registries (root, pages, overflow pages), to read:
  a process serving the assistant reads its queue. The one write allowed there
  is adding a message to the publish thread (publishing an event, which the
  processor validates like any other); the registry is written only by the
  processor, with a full-access key.

Anything else answers 403 ``insufficient_permissions``, whether the object
exists or not, so a limited key cannot tell another assistant's ids from
unknown ones. The in-process client has no key: it is full access.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest

from betaassi_django.metadata import OWNER_KEY, PUBLISH_KEY, REGISTRY_KEY, SESSION_ASSISTANT_KEY
from betaassi_django.registry.pages import Page
from betaassi_django.registry.root import Root

from .errors import ApiError
from .limits import plausible_id
from .models import ApiKey, Assistant, Thread

#: The request attribute ``http.authenticate`` sets; a handler without it fails (closed) rather than opens.
REQUEST_ATTR = "betaassi_scope"
CODE = "insufficient_permissions"


@dataclass(frozen=True)
class Scope:
    read_only: bool = False
    #: None: every assistant.
    assistant_ids: frozenset[str] | None = None

    @property
    def limited(self) -> bool:
        return self.assistant_ids is not None


FULL = Scope()


def of_key(key: ApiKey) -> Scope:
    return Scope(read_only=key.read_only, assistant_ids=frozenset(key.assistant_ids) if key.assistant_ids else None)


def of_request(request: HttpRequest) -> Scope:
    return getattr(request, REQUEST_ATTR)


def denied(reason: str) -> ApiError:
    """OpenAI's wording for a key that lacks a permission, with the reason."""
    return ApiError(403, f"You have insufficient permissions for this operation: {reason}", code=CODE)


def _outside(kind: str, object_id: str) -> ApiError:
    return denied(f"this API key is limited to some assistants and their threads, and {kind} "
                  f"'{object_id}' is not one of them.")


def check_method(scope: Scope, method: str) -> None:
    if scope.read_only and method != "GET":
        raise denied("this API key is read-only (GET requests only).")


def check_assistant(scope: Scope, assistant_id: str) -> None:
    if scope.limited and assistant_id not in scope.assistant_ids:
        raise _outside("assistant", assistant_id)


def check_unassigned(scope: Scope, kind: str) -> None:
    """Objects that belong to no assistant (files, vector stores): a key limited to some assistants cannot tell
    whose they are, so it reaches none of them (a read-only key still reads them)."""
    if scope.limited:
        raise denied(f"this API key is limited to some assistants and their threads, and {kind} belong to no "
                     f"assistant: use a key without that limit.")


def check_create_assistant(scope: Scope) -> None:
    if scope.limited:
        raise denied("this API key is limited to some assistants, so it may not create assistants.")


def check_assistant_change(scope: Scope, assistant_id: str, body: dict) -> None:
    """A limited key may not repoint its assistant's publish thread or registry (that would bring other threads
    into its scope)."""
    if not scope.limited or "metadata" not in body:
        return
    current = Assistant.objects.filter(id=assistant_id).values_list("metadata", flat=True).first() or {}
    new = body["metadata"] or {}
    for key in (PUBLISH_KEY, REGISTRY_KEY, OWNER_KEY):  # which queue, and which deployment applies it
        if new.get(key) != current.get(key):
            raise denied(f"this API key is limited to some assistants, so it may not change the metadata "
                         f"'{key}' of an assistant.")


def check_new_thread(scope: Scope, metadata: dict | None) -> None:
    """A thread a limited key creates (or re-tags) must name one of its assistants."""
    if scope.limited and (metadata or {}).get(SESSION_ASSISTANT_KEY) not in scope.assistant_ids:
        raise denied(f"this API key is limited to some assistants, so a thread it creates or changes must name "
                     f"one of them in its metadata '{SESSION_ASSISTANT_KEY}'.")


def _queue_threads(assistant_ids: frozenset[str]) -> tuple[set[str], set[str]]:
    """The publish threads and the registry threads (roots, pages, overflow pages) of these assistants."""
    publish, roots = set(), set()
    for metadata in Assistant.objects.filter(id__in=assistant_ids).values_list("metadata", flat=True):
        metadata = metadata or {}
        publish.add(metadata.get(PUBLISH_KEY))
        roots.add(metadata.get(REGISTRY_KEY))
    registry, pages = set(roots), set()
    for root_id, metadata in Thread.objects.filter(id__in=roots - {None}).values_list("id", "metadata"):
        try:
            pages.update(Root.from_metadata(root_id, metadata or {}).page_ids)
        except ValueError:  # a malformed root: its pages are not reachable through it
            continue
    registry |= pages
    for page_id, metadata in Thread.objects.filter(id__in=pages).values_list("id", "metadata"):
        try:
            registry.update(thread for _, thread in Page.from_metadata(page_id, metadata or {}).directory)
        except ValueError:
            continue
    return publish - {None}, registry - {None}


def check_thread(scope: Scope, thread_id: str, *, write: bool = False, publishing: bool = False) -> None:
    """Whether the key reaches this thread (and what under it): its own assistants' session threads fully, their
    queue threads to read, and a publish thread also to add a message to (``publishing``)."""
    if not scope.limited:
        return
    metadata = (Thread.objects.filter(id=thread_id).values_list("metadata", flat=True).first()
                if plausible_id(thread_id) else None)
    if metadata is None:
        raise _outside("thread", thread_id)
    if metadata.get(SESSION_ASSISTANT_KEY) in scope.assistant_ids:
        return
    publish, registry = _queue_threads(scope.assistant_ids)
    if thread_id in publish and (not write or publishing):
        return
    if thread_id in registry and not write:
        return
    if thread_id in publish or thread_id in registry:
        raise denied(f"thread '{thread_id}' is a publish thread or registry of its assistant; with this API key "
                     f"it may only be read (and events added to the publish thread): a full-access key changes it.")
    raise _outside("thread", thread_id)
