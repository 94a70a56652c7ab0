"""Store models of the embedded Assistants API.

Each object keeps the fields of its OpenAPI schema. ``seq`` (the primary key)
orders objects by creation even within one second, so list cursors are exact;
``id`` is the public OpenAI-style id.
"""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from .ids import new_id, now

ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")
#: Statuses in which a run is in an engine's hands (``requires_action`` waits for the client instead):
#: the executing process keeps its ``heartbeat_at`` fresh, or another process ends it (``recovery``).
EXECUTING_RUN_STATUSES = ("queued", "in_progress", "cancelling")
TERMINAL_RUN_STATUSES = ("cancelled", "failed", "completed", "incomplete", "expired")


class StoredObject(models.Model):
    seq = models.BigAutoField(primary_key=True)
    created_at = models.BigIntegerField(default=now)
    metadata = models.JSONField(default=dict)

    class Meta:
        abstract = True
        ordering = ["seq"]

    def __str__(self) -> str:
        return self.id


def _assistant_id() -> str:
    return new_id("asst")


def _thread_id() -> str:
    return new_id("thread")


def _message_id() -> str:
    return new_id("msg")


def _run_id() -> str:
    return new_id("run")


def _step_id() -> str:
    return new_id("step")


def _auto() -> str:
    return "auto"


class Assistant(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_assistant_id)
    name = models.CharField(max_length=256, null=True)
    description = models.CharField(max_length=512, null=True)
    model = models.CharField(max_length=256)
    instructions = models.TextField(null=True)
    tools = models.JSONField(default=list)
    tool_resources = models.JSONField(null=True)
    temperature = models.FloatField(null=True)
    top_p = models.FloatField(null=True)
    response_format = models.JSONField(null=True)
    reasoning_effort = models.CharField(max_length=16, null=True)


class Thread(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_thread_id)
    tool_resources = models.JSONField(null=True)


class Message(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_message_id)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    status = models.CharField(max_length=16, default="completed")
    incomplete_details = models.JSONField(null=True)
    completed_at = models.BigIntegerField(null=True)
    incomplete_at = models.BigIntegerField(null=True)
    role = models.CharField(max_length=16)
    content = models.JSONField(default=list)
    assistant_id = models.CharField(max_length=64, null=True)
    run_id = models.CharField(max_length=64, null=True, db_index=True)
    attachments = models.JSONField(null=True)

    class Meta(StoredObject.Meta):
        indexes = [models.Index(fields=["thread", "seq"])]


class Run(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_run_id)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="runs")
    assistant_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, default="queued")
    required_action = models.JSONField(null=True)
    last_error = models.JSONField(null=True)
    expires_at = models.BigIntegerField(null=True)
    started_at = models.BigIntegerField(null=True)
    cancelled_at = models.BigIntegerField(null=True)
    failed_at = models.BigIntegerField(null=True)
    completed_at = models.BigIntegerField(null=True)
    incomplete_details = models.JSONField(null=True)
    model = models.CharField(max_length=256)
    instructions = models.TextField(default="")
    additional_instructions = models.TextField(null=True)
    tools = models.JSONField(default=list)
    usage = models.JSONField(null=True)
    temperature = models.FloatField(null=True)
    top_p = models.FloatField(null=True)
    max_prompt_tokens = models.IntegerField(null=True)
    max_completion_tokens = models.IntegerField(null=True)
    truncation_strategy = models.JSONField(default=dict)
    tool_choice = models.JSONField(default=_auto)
    parallel_tool_calls = models.BooleanField(default=True)
    response_format = models.JSONField(default=_auto)
    reasoning_effort = models.CharField(max_length=16, null=True)
    #: The database's clock when the executing process last said it is alive (not part of the API).
    heartbeat_at = models.DateTimeField(db_default=Now())

    class Meta(StoredObject.Meta):
        indexes = [
            models.Index(fields=["thread", "seq"]),
            # What the sweeps of ``recovery`` look for, kept small: only runs in those statuses.
            models.Index(fields=["heartbeat_at"], condition=Q(status__in=EXECUTING_RUN_STATUSES),
                         name="assistants_api_run_heartbeat"),
            models.Index(fields=["expires_at"], condition=Q(status="requires_action"),
                         name="assistants_api_run_awaiting"),
        ]
        constraints = [
            # At most one active run per thread, enforced by the database so
            # that it holds across server processes.
            models.UniqueConstraint(
                fields=["thread"],
                condition=Q(status__in=ACTIVE_RUN_STATUSES),
                name="assistants_api_one_active_run_per_thread",
            )
        ]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    def save(self, *args, **kwargs) -> None:
        """A run that enters an executing status starts its heartbeat clock now, so that a run queued again
        (tool outputs) is not taken for abandoned because of the time it waited for the client."""
        fields = kwargs.get("update_fields")
        if self.status in EXECUTING_RUN_STATUSES and (fields is None or "status" in fields):
            self.heartbeat_at = Now()
            if fields is not None:
                kwargs["update_fields"] = [*fields, "heartbeat_at"]
        super().save(*args, **kwargs)


class RunStep(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_step_id)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    thread_id = models.CharField(max_length=64)
    assistant_id = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, default="in_progress")
    step_details = models.JSONField(default=dict)
    last_error = models.JSONField(null=True)
    expired_at = models.BigIntegerField(null=True)
    cancelled_at = models.BigIntegerField(null=True)
    failed_at = models.BigIntegerField(null=True)
    completed_at = models.BigIntegerField(null=True)
    usage = models.JSONField(null=True)
    #: Upstream output items to send back with this step's calls (the Responses API's reasoning items); not part
    #: of the API.
    carried_items = models.JSONField(null=True)


def _file_id() -> str:
    return new_id("file").replace("_", "-", 1)  # OpenAI's file ids read ``file-…``


def _vector_store_id() -> str:
    return new_id("vs")


def _file_batch_id() -> str:
    return new_id("vsfb")


def file_path(file: File, filename: str) -> str:
    """Where a file's bytes go in the project's storage: by id, never by the client's name (which the API keeps
    only as ``filename``)."""
    return f"betaassi/files/{file.id}"


class File(StoredObject):
    """An uploaded file (``OpenAIFile``); its bytes are in the project's default storage (``storages["default"]``)."""

    id = models.CharField(max_length=64, unique=True, default=_file_id)
    bytes = models.BigIntegerField(default=0)
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=32)
    expires_at = models.BigIntegerField(null=True)
    content = models.FileField(upload_to=file_path, max_length=255)
    #: The Content-Type the client sent (not part of the API; ingestion reads the name's extension first).
    content_type = models.CharField(max_length=255, blank=True, default="")


class VectorStore(StoredObject):
    """A vector store; ``file_counts`` are counted from its files' statuses when it is read."""

    id = models.CharField(max_length=64, unique=True, default=_vector_store_id)
    # Unbounded, as the specification's ``name`` is (no maxLength): the request body's size is the limit.
    name = models.TextField(null=True)
    status = models.CharField(max_length=16, default="completed")
    usage_bytes = models.BigIntegerField(default=0)
    expires_after = models.JSONField(null=True)
    expires_at = models.BigIntegerField(null=True)
    last_active_at = models.BigIntegerField(null=True)


class VectorStoreFileBatch(StoredObject):
    id = models.CharField(max_length=64, unique=True, default=_file_batch_id)
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="batches")
    status = models.CharField(max_length=16, default="in_progress")


class VectorStoreFile(models.Model):
    """A file in a vector store (its public id is the file's id); ingestion moves ``status`` from ``in_progress``
    to ``completed`` or ``failed``. ``claimed_at``: when a process took it to ingest (a lease, so that a process
    killed mid-work leaves it to another)."""

    seq = models.BigAutoField(primary_key=True)
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="files")
    file_id = models.CharField(max_length=64)
    batch = models.ForeignKey(VectorStoreFileBatch, null=True, on_delete=models.SET_NULL, related_name="files")
    created_at = models.BigIntegerField(default=now)
    status = models.CharField(max_length=16, default="in_progress")
    usage_bytes = models.BigIntegerField(default=0)
    last_error = models.JSONField(null=True)
    chunking_strategy = models.JSONField(default=dict)
    attributes = models.JSONField(null=True)
    claimed_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["vector_store", "file_id"],
                                               name="assistants_api_one_file_per_store")]
        indexes = [models.Index(fields=["status"], condition=Q(status="in_progress"),
                                name="assistants_api_vsfile_pending")]

    def __str__(self) -> str:
        return self.file_id


class Chunk(models.Model):
    """One chunk of a vector store file's text, as search returns it. ``embedding``: float32 values, little
    endian, when an embeddings endpoint is configured. The keyword index over ``text`` is the database's own
    (see ``knowledge``)."""

    vector_store_file = models.ForeignKey(VectorStoreFile, on_delete=models.CASCADE, related_name="chunks")
    vector_store_id = models.CharField(max_length=64)
    file_id = models.CharField(max_length=64)
    index = models.IntegerField()
    text = models.TextField()
    tokens = models.IntegerField(default=0)
    embedding = models.BinaryField(null=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["vector_store_id", "file_id"])]


def hash_key(raw_key: str) -> str:
    """SHA-256 of a key. Keys are 256 random bits, so a fast hash is safe."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    """A bearer key for the embedded API over HTTP. Only its hash is stored.

    Its scope (see ``scopes``): full access by default; ``read_only`` allows GET only; ``assistant_ids``, when
    not empty, limits it to those assistants and their threads.
    """

    PREFIX = "sk-betaassi-"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=24, help_text="The first characters, to recognise a key.")
    hashed_key = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    read_only = models.BooleanField(default=False, help_text="Only GET requests (retrieve and list).")
    assistant_ids = models.JSONField(
        default=list, blank=True,
        help_text="Ids of the assistants the key is limited to (with their threads); empty: every assistant.")

    class Meta:
        verbose_name = "API key"
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def scope_label(self) -> str:
        """The scope in words, as the admin and ``create_api_key`` show it."""
        if not self.read_only and not self.assistant_ids:
            return "Full access"
        parts = ["Read-only"] if self.read_only else []
        if self.assistant_ids:
            parts.append("assistants " + ", ".join(self.assistant_ids))
        return "; ".join(parts)

    @classmethod
    def issue(cls, name: str, *, read_only: bool = False, assistant_ids: list[str] | tuple[str, ...] = ()
              ) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the raw key, which is never stored."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, prefix=raw[: len(cls.PREFIX) + 6], hashed_key=hash_key(raw),
                                 read_only=read_only, assistant_ids=sorted(set(assistant_ids)))
        return key, raw
