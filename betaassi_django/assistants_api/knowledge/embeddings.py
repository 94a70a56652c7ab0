"""Embeddings from the upstream's ``POST /embeddings`` (``BETAASSI_EMBEDDINGS_MODEL``), as float32 bytes.

The client is the openai SDK's, built from the same settings as the responders' (``responders/upstream.py``:
base URL, key, timeout, retries), but synchronous: ingestion and search run in worker threads. The SDK asks
for base64 and decodes it; each vector is kept as little-endian float32 bytes (``Chunk.embedding``).
"""

from __future__ import annotations

import threading

import numpy as np
import openai
from django.core.signals import setting_changed

from betaassi_django import conf

#: One request's inputs at most (OpenAI: 2048 inputs and 300,000 tokens summed per request).
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 250_000

_lock = threading.Lock()
_client: openai.OpenAI | None = None


class EmbeddingsError(Exception):
    """The endpoint failed (after the SDK's retries) or answered something unusable; the message says which."""


def enabled() -> bool:
    return bool(conf.get().embeddings_model)


def client() -> openai.OpenAI:
    global _client
    with _lock:
        if _client is None:
            settings = conf.get()
            _client = openai.OpenAI(
                base_url=settings.upstream_base_url, api_key=settings.upstream_api_key or "unset",
                timeout=settings.upstream_timeout, max_retries=settings.upstream_max_retries)
        return _client


def _forget_client(**kwargs) -> None:
    global _client
    with _lock:
        _client = None


setting_changed.connect(_forget_client)


def _batches(texts: list[str], tokens: list[int]):
    start, total = 0, 0
    for index, count in enumerate(tokens):
        if index > start and (index - start >= MAX_BATCH_INPUTS or total + count > MAX_BATCH_TOKENS):
            yield start, index
            start, total = index, 0
        total += count
    if start < len(texts):
        yield start, len(texts)


def embed(texts: list[str], tokens: list[int] | None = None) -> list[bytes]:
    """One float32 little-endian vector per text, in order (batched; ``tokens``: each text's token count, to keep
    a batch under the upstream's limit). Raises ``EmbeddingsError``."""
    settings = conf.get()
    options = {"dimensions": settings.embeddings_dimensions} if settings.embeddings_dimensions else {}
    counts = tokens if tokens is not None else [len(text) // 3 + 1 for text in texts]
    vectors: list[bytes] = []
    for start, end in _batches(texts, counts):
        # The endpoint refuses an empty string: a blank chunk is embedded as one space.
        inputs = [text if text.strip() else " " for text in texts[start:end]]
        try:
            response = client().embeddings.create(model=settings.embeddings_model, input=inputs, **options)
        except openai.APIStatusError as exc:
            raise EmbeddingsError(f"The embeddings endpoint answered {exc.status_code}: {_message(exc)}") from exc
        except openai.APIError as exc:
            raise EmbeddingsError(f"The embeddings endpoint failed: {exc.message}") from exc
        ordered = sorted(response.data, key=lambda item: item.index)
        if len(ordered) != len(inputs):
            raise EmbeddingsError(f"The embeddings endpoint answered {len(ordered)} vectors for {len(inputs)} "
                                  "inputs.")
        vectors += [np.asarray(item.embedding, dtype="<f4").tobytes() for item in ordered]
    return vectors


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")
