"""Models a developer would write: entity subclasses with their own fields."""

import datetime
import decimal
import uuid

from django.db import models

from betaassi_django.models import BaseAssistant, BaseMessage, BaseRun, BaseThread


class StreamThread(BaseThread):
    """The seed's example: a thread that remembers a high water mark."""

    hwm = models.CharField(max_length=64, blank=True, default="")


class TaggedThread(BaseThread):
    tag = models.CharField(max_length=32, unique=True)


class Support(BaseAssistant):
    """You answer support questions politely."""

    tier = models.IntegerField(default=1)
    escalate = models.BooleanField(default=False)

    #: Besides its own model, sessions may choose gpt-4o-mini or any model named m... (the tests' names).
    allowed_models = ["gpt-4o-mini", "m*"]


class Kitchen(BaseAssistant):
    """Every type the codec supports."""

    text = models.TextField(blank=True, default="")
    short = models.CharField(max_length=20, blank=True, null=True)
    count = models.BigIntegerField(null=True, blank=True)
    flag = models.BooleanField(null=True, blank=True)
    ratio = models.FloatField(null=True, blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    moment = models.DateTimeField(null=True, blank=True)
    span = models.DurationField(null=True, blank=True)
    token = models.UUIDField(null=True, blank=True)
    data = models.JSONField(null=True, blank=True)
    color = models.CharField(max_length=8, choices=[("red", "Red"), ("green", "Green")], blank=True, default="red")


class NotedMessage(BaseMessage):
    note = models.CharField(max_length=100, blank=True, default="")


class TrackedRun(BaseRun):
    ticket = models.CharField(max_length=20, blank=True, default="")


DEFAULTS = {
    "day": datetime.date(2026, 1, 1),
    "moment": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    "price": decimal.Decimal("1.5000"),
    "token": uuid.UUID(int=1),
}
