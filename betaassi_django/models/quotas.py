"""The turn counter behind ``BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE`` (see ``betaassi_django.quotas``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TurnWindow(models.Model):
    """One user's current minute of turns: one row per user, counted with conditional UPDATEs.

    The window starts at the user's first turn after the previous one ended, so every process (and every
    database, SQLite included) agrees on the count without locks: a turn is taken only by an UPDATE whose
    WHERE says there is room.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE,
                                related_name="+")
    started_at = models.DateTimeField()
    turns = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "turn window"

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.turns} turn(s) since {self.started_at:%H:%M:%S}"
