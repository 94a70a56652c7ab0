"""``StreamThread``: where a durable queue consumer keeps its position (docs/consumers.md).

The idea this app comes from, shipped: a thread whose metadata holds a consumer's high water mark. One per
consumer name and assistant; the assistant's publish thread names it (``consumer:<name>``), so every process
and deployment sharing the backend finds the same position.
"""

from __future__ import annotations

from django.db import models

from .entities import BaseThread


class StreamThread(BaseThread):
    """A consumer's position on one assistant's publish queue: the last event it handled (``hwm``)."""

    consumer = models.CharField(max_length=55, help_text="The consumer's name.")
    assistant_id = models.CharField(max_length=64, help_text="The assistant whose queue it follows.")
    hwm = models.CharField(max_length=64, blank=True, default="",
                           help_text="The last event handled and committed (empty: none yet).")

    class Meta:
        verbose_name = "queue-consumer position"

    def __str__(self) -> str:
        return f"{self.consumer} on {self.assistant_id} at {self.hwm or 'the start'}"
