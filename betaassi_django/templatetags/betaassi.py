"""Template filters the app's pages and its admin share: times as people say them, long ids shortened.

``{% load betaassi %}`` then ``{{ session.touched_at|ago }}`` ("just now", "5 minutes ago"; ``|when`` adds the
exact time on hover) and
``{{ assistant.id|short_id }}`` (``asst_LyTJ…FQ9WW``, the whole id on hover). It imports nothing of the app,
so every floor may use it (the admin's columns call the same functions).
"""

from __future__ import annotations

import datetime

from django import template
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince
from django.utils.timezone import localtime

register = template.Library()

#: Characters kept at each end of a shortened id (after its ``asst_``-like prefix).
HEAD, TAIL = 4, 5


@register.filter
def ago(when: datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """``when`` relative to now, as one unit: "just now" under a minute (never "0 minutes ago"), else
    "5 minutes ago", "2 hours ago"; "" for no time."""
    if when is None or when == "":
        return ""
    now = now or timezone.now()
    if (now - when).total_seconds() < 60:
        return "just now"
    return f"{timesince(when, now, depth=1)} ago"


@register.filter(name="when")
def when_cell(when: datetime.datetime | None) -> SafeString | str:
    """A time as ``ago`` says it, the exact time on hover (``<time>``); "-" for none."""
    if when is None or when == "":
        return "-"
    return format_html('<time datetime="{}" title="{}">{}</time>', when.isoformat(),
                       date_format(localtime(when), "DATETIME_FORMAT"), ago(when))


def shorten(value: str) -> str:
    """``asst_LyTJeBnJa5OLaHtGTx0FQ9WW`` -> ``asst_LyTJ…FQ9WW``; short values are kept whole."""
    mark = "-" if value.startswith("file-") else "_"  # OpenAI's file ids read ``file-…``
    head, _, rest = value.partition(mark) if mark in value[:8] else ("", "", value)
    prefix = f"{head}{mark}" if head else ""
    if len(rest) <= HEAD + TAIL + 1:
        return value
    return f"{prefix}{rest[:HEAD]}…{rest[-TAIL:]}"


@register.filter
def short_id(value: object) -> SafeString | str:
    """An id shortened for a narrow column, the whole id in its ``title`` (shown on hover)."""
    text = "" if value is None else str(value)
    shown = shorten(text)
    if shown == text:
        return text
    return format_html('<span class="short-id" title="{}">{}</span>', text, shown)
