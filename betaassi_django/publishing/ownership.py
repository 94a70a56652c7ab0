"""Which deployment applies an assistant's queue, when several Django projects share one backend.

An assistant's metadata names the deployment that owns its queue (``betaassi_deployment``; absent means
``"default"``, so a backend used by one project needs nothing). Only that deployment's processors take its
lease and apply its events; every other deployment keeps its mirror current by following the queue
(``follower``). docs/deployment.md, "Several deployments on one backend".
"""

from __future__ import annotations

from betaassi_django import conf
from betaassi_django.metadata import OWNER_KEY

DEFAULT = "default"


def deployment() -> str:
    """This deployment's name (``BETAASSI_DEPLOYMENT``)."""
    return conf.get().deployment


def owner_of(metadata: dict[str, str] | None) -> str:
    """The deployment that owns the queue of an assistant with this metadata."""
    return (metadata or {}).get(OWNER_KEY) or DEFAULT


def owned_here(metadata: dict[str, str] | None) -> bool:
    """Whether this deployment's processors apply that assistant's queue."""
    return owner_of(metadata) == deployment()


def owner_keys() -> dict[str, str]:
    """The key a new assistant carries: this deployment's name, unless it is the default (no key needed)."""
    name = deployment()
    return {} if name == DEFAULT else {OWNER_KEY: name}
