"""The publish queue's tables: leases, per-assistant state, event outcomes and the session mirror."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.conf import settings
from django.db import models

from . import kinds


class PublishLease(models.Model):
    """Which processor holds an assistant's publish queue, until when.

    Taken and renewed with a conditional UPDATE, so it is exclusive on every
    database (SQLite included), not only where ``select_for_update`` exists.
    """

    assistant_id = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=128)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "publish-queue lease"

    def __str__(self) -> str:
        return f"{self.assistant_id} held by {self.holder} until {self.expires_at:%H:%M:%S}"


class PublishState(models.Model):
    """The processor's memory of one assistant's queue: its last failure, when to retry, threads to clean up.

    A failure of one assistant's batch (the backend refused or is unreachable, a registry page is broken) is
    recorded here and retried with exponential back-off, so it never delays the other assistants; staff see
    it on the queue page and the assistants list. ``orphans`` lists threads a commit created or unlinked
    that may be unreferenced if it failed; the next attempt deletes those the registry does not name.
    ``pending`` holds a batch's local records (event outcomes, mirror rows) from just before its backend
    commit until they are written: after a crash the next attempt writes them if the commit happened (the
    root's high water mark is the batch's last event) and drops them otherwise.
    """

    assistant_id = models.CharField(max_length=64, primary_key=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed attempts in a row (0: healthy).")
    last_error = models.TextField(blank=True, default="")
    failed_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True, help_text="No attempt before this (back-off).")
    orphans = models.JSONField(default=list, blank=True)
    pending = models.JSONField(null=True, blank=True, help_text="The local records of the batch being committed.")

    class Meta:
        verbose_name = "publish-queue state"

    def __str__(self) -> str:
        return f"{self.assistant_id}: {self.failures} failure(s)" if self.failures else f"{self.assistant_id}: ok"


class PublishHint(models.Model):
    """An event was published on this assistant's queue (one row per publish, by the publishing process).

    The processors' poll reads these rows, one query per cycle, instead of every assistant's queue; a processor
    deletes an assistant's rows once it has drained that queue. A hint that is lost (the publisher died before
    writing it, or another deployment published) is made up for by the processors' slower full sweep.
    """

    id = models.BigAutoField(primary_key=True)
    assistant_id = models.CharField(max_length=64, db_index=True)

    class Meta:
        verbose_name = "publish-queue hint"

    def __str__(self) -> str:
        return f"{self.assistant_id} #{self.pk}"


class PublishedEvent(models.Model):
    """What the processor did with one publish-queue event (the backend message is the event)."""

    STATUSES = [("applied", "applied"), ("noop", "no-op"), ("rejected", "rejected"), ("replayed", "replayed"),
                ("passed", "passed")]

    event_id = models.CharField(max_length=64, primary_key=True)
    assistant_id = models.CharField(max_length=64, db_index=True)
    op = models.CharField(max_length=32, blank=True)
    session_id = models.CharField(max_length=64, blank=True, null=True)
    status = models.CharField(max_length=16, choices=STATUSES)
    reason = models.TextField(blank=True, default="")
    processed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "publish-queue event"
        ordering = ["processed_at"]

    def __str__(self) -> str:
        return f"{self.op or 'event'} {self.session_id or ''} {self.status}".strip()


class Session(models.Model):
    """The local mirror of one registry record, for queries and the admin (the registry wins)."""

    assistant_id = models.CharField(max_length=64, db_index=True)
    session_id = models.CharField(max_length=64)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                              related_name="assistant_sessions")
    kind = models.CharField(max_length=16, default="default")
    context_messages = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=100, blank=True, null=True)
    thread_id = models.CharField(max_length=64, blank=True, null=True)
    created_at = models.DateTimeField()
    touched_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assistant_id", "session_id"],
                                               name="betaassi_session_unique_per_assistant")]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.kind})"

    # -- talking to the assistant in this session ------------------------------

    def truncation_strategy(self) -> dict:
        """What the run shows the model: everything, the last message, or the last N (``kinds``)."""
        return kinds.truncation_strategy(self.kind, self.context_messages)

    def run_options(self) -> dict:
        options = {"thread_id": self.thread_id, "assistant_id": self.assistant_id,
                   "truncation_strategy": self.truncation_strategy()}
        if self.model:
            options["model"] = self.model
        return options

    def touch(self) -> None:
        """Record that the session was used now."""
        from django.utils import timezone

        self.touched_at = timezone.now()
        if self.pk:
            Session.objects.filter(pk=self.pk).update(touched_at=self.touched_at)

    def ask(self, text: str, *, user=None) -> str:
        """Send ``text`` in this session and return the assistant's whole reply.

        The turn counts against ``user`` (default: the owner); over ``BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE``
        it raises ``quotas.QuotaExceeded`` before any backend call, and ``quotas.ModelNotAllowed`` when the
        session's model is no longer on its assistant class's allow-list. The turn itself is
        ``betaassi_django.turns.ask``, which the WebSocket turns share.
        """
        from betaassi_django import turns

        return turns.ask(self, text, user=user)

    def astream(self, text: str, *, user=None) -> AsyncIterator[str]:
        """Send ``text`` in this session and yield the reply's text deltas as they arrive (the turn counts
        against ``user``, default the owner, as in ``ask``): ``betaassi_django.turns.astream``."""
        from betaassi_django import turns

        return turns.astream(self, text, user=user)


class ConsumerLease(models.Model):
    """Which process runs a named consumer on an assistant's queue, until when (``lease``, as the processor's)."""

    consumer = models.CharField(max_length=64)
    assistant_id = models.CharField(max_length=64)
    holder = models.CharField(max_length=128)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "queue-consumer lease"
        constraints = [models.UniqueConstraint(fields=["consumer", "assistant_id"],
                                               name="betaassi_consumer_lease_unique")]

    def __str__(self) -> str:
        return f"{self.consumer} on {self.assistant_id} held by {self.holder} until {self.expires_at:%H:%M:%S}"


class ConsumerFailure(models.Model):
    """An event a consumer's handler kept failing on: recorded, and the consumer moved on (``consume_queue``)."""

    consumer = models.CharField(max_length=64)
    assistant_id = models.CharField(max_length=64, db_index=True)
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    error = models.TextField(blank=True, default="")
    failed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "queue-consumer failure"
        ordering = ["-failed_at"]
        constraints = [models.UniqueConstraint(fields=["consumer", "event_id"],
                                               name="betaassi_consumer_failure_unique")]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_id} failed {self.attempts} time(s)"
