"""System checks of betaassi-django, registered by the app's ``ready()``.

Model checks (``betaassi.E001``-``E006``, ``W001``, tag ``models``) refuse models whose fields cannot live in
backend metadata; configuration checks (``betaassi.E010``-``E012``, ``W010``-``W013``, tag ``compatibility``)
name the setting a project is missing. docs/configuration.md lists them all.
"""

from __future__ import annotations

from django.core import checks

from betaassi_django.checks.config import CONFIGURATION_CHECKS
from betaassi_django.checks.models import check_metadata_fields, check_model

__all__ = ["CONFIGURATION_CHECKS", "check_metadata_fields", "check_model", "register"]


def register() -> None:
    """Register every check with its tag (idempotent: the registry is a set)."""
    checks.register(check_metadata_fields, checks.Tags.models)
    for check in CONFIGURATION_CHECKS:
        checks.register(check, checks.Tags.compatibility)
