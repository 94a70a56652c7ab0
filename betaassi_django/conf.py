"""The one place that reads betaassi-django's configuration.

Each value comes from the Django setting of the same name when a project sets
one, else from the environment (django-environ, so ``.env`` is honoured), else
its default; docs/configuration.md lists every one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import environ
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
BACKENDS = ("embedded", "remote")
RESPONDERS = ("echo", "openai")
UPSTREAM_APIS = ("responses", "chat")
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")

_env = environ.Env()


@dataclass(frozen=True)
class BetaassiSettings:
    backend: str
    openai_base_url: str
    openai_api_key: str
    responder: str
    upstream_base_url: str
    upstream_api_key: str
    upstream_api: str
    api_max_body_bytes: int
    run_expires_seconds: int
    echo_delay: float
    in_server_processor: bool
    upstream_timeout: float
    upstream_max_retries: int
    tool_timeout: float
    run_heartbeat_seconds: float
    run_stale_seconds: float
    max_sessions_per_user: int
    max_sessions_per_user_per_assistant: int
    max_turns_per_user_per_minute: int
    websocket_recheck_seconds: float
    deployment: str
    queue_prune_seconds: float
    queue_keep: int
    publish_sweep_seconds: float
    file_max_bytes: int
    embeddings_model: str
    embeddings_dimensions: int
    ingest_lease_seconds: float


def _read(name: str, default, cast=str):
    if hasattr(settings, name):
        return cast(getattr(settings, name))
    if cast is int:
        return _env.int(name, default=default)
    if cast is float:
        return _env.float(name, default=default)
    if cast is bool:
        return _env.bool(name, default=default)
    return _env.str(name, default=default)


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _read(name, default).strip().lower() or default
    if value not in allowed:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _run_timing() -> dict[str, float]:
    """Heartbeat and staleness of runs; a run must be able to miss a heartbeat without being reaped."""
    heartbeat = _read("BETAASSI_RUN_HEARTBEAT_SECONDS", 5.0, float)
    stale = _read("BETAASSI_RUN_STALE_SECONDS", 15.0, float)
    if not 0 < heartbeat <= stale / 2:
        raise ImproperlyConfigured(f"BETAASSI_RUN_HEARTBEAT_SECONDS={heartbeat} must be positive and at most half "
                                   f"of BETAASSI_RUN_STALE_SECONDS={stale}")
    return {"run_heartbeat_seconds": heartbeat, "run_stale_seconds": stale}


def _limits() -> dict[str, int]:
    """The per-user limits (docs/security.md, "Quotas and model allow-lists"); 0 means unlimited."""
    defaults = {"max_sessions_per_user": 100, "max_sessions_per_user_per_assistant": 20,
                "max_turns_per_user_per_minute": 30}
    values = {}
    for name, default in defaults.items():
        setting = f"BETAASSI_{name.upper()}"
        value = getattr(settings, setting) if hasattr(settings, setting) else _read(setting, default, int)
        value = 0 if value is None else value  # None, like 0: unlimited
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ImproperlyConfigured(f"{setting}={value!r} must be 0 or None (unlimited) or a positive integer")
        values[name] = value
    return values


def _queue_settings() -> dict:
    """This deployment's name among those sharing a backend, the publish queues' retention, and how often a
    processor sweeps every queue (publishing/processor.py)."""
    deployment = _read("BETAASSI_DEPLOYMENT", "default").strip()
    if not DEPLOYMENT_NAME.fullmatch(deployment):
        raise ImproperlyConfigured(f"BETAASSI_DEPLOYMENT={deployment!r} must be 1 to 40 letters, digits, '_', '-' "
                                   "or '.', starting with a letter or digit")
    prune = _read("BETAASSI_QUEUE_PRUNE_SECONDS", 0.0, float)
    keep = _read("BETAASSI_QUEUE_KEEP", 1000, int)
    if prune < 0 or keep < 0:
        raise ImproperlyConfigured(f"BETAASSI_QUEUE_PRUNE_SECONDS={prune} and BETAASSI_QUEUE_KEEP={keep} must not "
                                   "be negative")
    sweep = _read("BETAASSI_PUBLISH_SWEEP_SECONDS", 60.0, float)
    if not sweep > 0:
        raise ImproperlyConfigured(f"BETAASSI_PUBLISH_SWEEP_SECONDS={sweep} must be positive")
    return {"deployment": deployment, "queue_prune_seconds": prune, "queue_keep": keep,
            "publish_sweep_seconds": sweep}


def _knowledge() -> dict:
    """Files and vector stores (docs/knowledge.md): the largest upload, and the embeddings model that makes search
    hybrid (empty: keyword search only, fully offline)."""
    max_bytes = _read("BETAASSI_FILE_MAX_BYTES", 64 * 1024 * 1024, int)
    dimensions = _read("BETAASSI_EMBEDDINGS_DIMENSIONS", 0, int)
    if max_bytes <= 0 or dimensions < 0:
        raise ImproperlyConfigured(f"BETAASSI_FILE_MAX_BYTES={max_bytes} must be positive and "
                                   f"BETAASSI_EMBEDDINGS_DIMENSIONS={dimensions} not negative")
    return {"file_max_bytes": max_bytes, "embeddings_model": _read("BETAASSI_EMBEDDINGS_MODEL", "").strip(),
            "embeddings_dimensions": dimensions, "ingest_lease_seconds": _ingest_lease()}


def _ingest_lease() -> float:
    """Seconds a process holds a file it ingests without renewing (knowledge/ingestion.py): a file whose process
    died is taken again after this."""
    seconds = _read("BETAASSI_INGEST_LEASE_SECONDS", 60.0, float)
    if not seconds > 0:
        raise ImproperlyConfigured(f"BETAASSI_INGEST_LEASE_SECONDS={seconds} must be positive")
    return seconds


def _recheck_seconds() -> float:
    seconds = _read("BETAASSI_WEBSOCKET_RECHECK_SECONDS", 15.0, float)
    if not seconds > 0:
        raise ImproperlyConfigured(f"BETAASSI_WEBSOCKET_RECHECK_SECONDS={seconds} must be positive")
    return seconds


@functools.cache
def get() -> BetaassiSettings:
    """The current configuration, read once and cached until a setting changes."""
    openai_base_url = _read("OPENAI_BASE_URL", "")
    openai_api_key = _read("OPENAI_API_KEY", "")
    return BetaassiSettings(
        backend=_choice("BETAASSI_BACKEND", "embedded", BACKENDS),
        openai_base_url=openai_base_url,
        openai_api_key=openai_api_key,
        responder=_choice("BETAASSI_RESPONDER", "echo", RESPONDERS),
        # The embedded backend's upstream falls back to the usual OpenAI variables.
        upstream_base_url=_read("BETAASSI_UPSTREAM_BASE_URL", "") or openai_base_url or OPENAI_DEFAULT_BASE_URL,
        upstream_api_key=_read("BETAASSI_UPSTREAM_API_KEY", "") or openai_api_key,
        upstream_api=_choice("BETAASSI_UPSTREAM_API", "responses", UPSTREAM_APIS),
        api_max_body_bytes=_read("BETAASSI_API_MAX_BODY_BYTES", 4 * 1024 * 1024, int),
        run_expires_seconds=_read("BETAASSI_RUN_EXPIRES_SECONDS", 600, int),
        echo_delay=_read("BETAASSI_ECHO_DELAY", 0.0, float),
        # Run the publish-queue processor inside the ASGI server process (one process, no Redis).
        in_server_processor=_read("BETAASSI_IN_SERVER_PROCESSOR", False, bool),
        # The openai responder's SDK client: seconds per upstream request, and retries (the SDK's).
        upstream_timeout=_read("BETAASSI_UPSTREAM_TIMEOUT", 60.0, float),
        upstream_max_retries=_read("BETAASSI_UPSTREAM_MAX_RETRIES", 2, int),
        # Seconds a function tool may take before the model gets an error output instead.
        tool_timeout=_read("BETAASSI_TOOL_TIMEOUT", 30.0, float),
        # Seconds between the re-checks of each open WebSocket's login and permissions (docs/security.md).
        websocket_recheck_seconds=_recheck_seconds(),
        # Runs outlive their process (assistants_api/recovery.py): every process running the engine stamps its
        # runs and sweeps every HEARTBEAT seconds; a run without a stamp for STALE seconds is ended.
        **_run_timing(),
        **_limits(),
        **_queue_settings(),
        **_knowledge(),
    )


def _reset(**kwargs) -> None:
    """Read the configuration again after a setting changed (tests' ``override_settings``).

    Only this module's cache: what is built from the configuration (the app's clients, the upstream
    client, the run engine's beat) listens for ``setting_changed`` itself, so settings import none of them.
    """
    get.cache_clear()


setting_changed.connect(_reset)
