"""Local bookkeeping of the publish queue."""

from __future__ import annotations

from django.db import models


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
