"""Limits an operator sets: sessions per user, turns per user per minute, and the models a session may choose.

One home for every limit, so the publisher (Python API, pages, admin), the WebSocket, ``Session.ask`` and
the publish-queue processor refuse the same things with the same words:

- sessions per owner, per assistant and in total (``BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT``,
  ``BETAASSI_MAX_SESSIONS_PER_USER``), refused with code ``quota_exceeded`` on the ``owner`` field;
- turns per user per minute (``BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE``), counted in the database so every
  process shares the count, refused with code ``quota_exceeded``;
- the models a session may name: the assistant class's ``allowed_models`` plus the assistant's own model
  (``None``: its own model only), refused with code ``model_not_allowed`` on the ``model`` field.

Superusers are exempt from the counts (never from the allow-list): they can change every setting anyway.
0 (or None) switches a count off.

This module sits below the publish queue and the turns (both call it), so it imports neither: the ``Session``
mirror it counts is handed in by the caller (``sessions``), and a session's assistant is found through the
finder ``AppConfig.ready`` hands down (``use_assistant_finder``: the assistant classes live on the models
floor, above). It owns its own table, ``TurnWindow`` (re-exported by ``betaassi_django.models``).
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Count, Exists, F, Manager, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from betaassi_django import conf

QUOTA_EXCEEDED, MODEL_NOT_ALLOWED = "quota_exceeded", "model_not_allowed"
#: The turn window: "per minute".
WINDOW = datetime.timedelta(seconds=60)


#: The ``Session`` mirror as a caller hands it in (``Session.objects`` or a queryset of it).
Sessions = Manager | QuerySet


class QuotaExceeded(ValidationError):
    """A per-user count is used up (``code`` is ``quota_exceeded``)."""


class ModelNotAllowed(ValidationError):
    """The model is not on the assistant class's allow-list (``code`` is ``model_not_allowed``)."""


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
        app_label = "betaassi_django"
        verbose_name = "turn window"

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.turns} turn(s) since {self.started_at:%H:%M:%S}"


# -- finding a session's assistant ----------------------------------------------------------------------------

#: ``assistant_id -> the assistant (an instance of its own class) or None``: ``models.find_assistant``.
AssistantFinder = Callable[[str], Any]
_find_assistant: AssistantFinder | None = None


def use_assistant_finder(find: AssistantFinder) -> None:
    """Set how a session's assistant is found (``AppConfig.ready`` passes ``models.find_assistant``: the
    assistant classes are on the floor above, which this module must not import)."""
    global _find_assistant
    _find_assistant = find


def _assistant_of(session) -> Any:
    if _find_assistant is None:
        raise RuntimeError("betaassi_django.quotas has no assistant finder: is the betaassi_django app ready?")
    return _find_assistant(session.assistant_id)


# -- the models a session may choose ------------------------------------------------------------------------


def allowed_models(assistant_class, assistant_model: str | None) -> list[str]:
    """The names (or ``fnmatch`` patterns) a session of this assistant may choose; its own model first."""
    declared = list(getattr(assistant_class, "allowed_models", None) or [])
    own = [assistant_model] if assistant_model else []
    return own + [name for name in declared if name not in own]


def choosable_models(assistant) -> list[str]:
    """The allowed models a form can offer by name (patterns cannot be listed)."""
    return [name for name in allowed_models(type(assistant), assistant.model) if not _is_pattern(name)]


def model_refusal(assistant_class, assistant_model: str | None, model: str | None) -> str | None:
    """Why ``model`` may not be a session's model, or None when it may (None and "" mean the assistant's)."""
    if not model:
        return None
    allowed = allowed_models(assistant_class, assistant_model)
    if any(model == name or (_is_pattern(name) and fnmatch.fnmatchcase(model, name)) for name in allowed):
        return None
    shown = model if len(model) <= 60 else model[:57] + "..."
    return f"model {shown!r} is not allowed for this assistant; allowed: {', '.join(allowed) or 'none'}"


def check_model(assistant, model: str | None) -> None:
    """Raise ``ModelNotAllowed`` naming the ``model`` field when the assistant's sessions may not use it."""
    reason = model_refusal(type(assistant), assistant.model, model)
    if reason:
        raise ModelNotAllowed({"model": ValidationError(reason, code=MODEL_NOT_ALLOWED)})


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


# -- sessions per owner -----------------------------------------------------------------------------------


def exempt(user_id: int | None) -> bool:
    """Owners the counts do not apply to: superusers (and no one, when there is no such user)."""
    if user_id is None:
        return True
    return get_user_model().objects.filter(pk=user_id, is_superuser=True).exists()


def session_refusal(*, on_assistant: int, in_all: int, per_assistant: int | None = None,
                    total: int | None = None) -> str | None:
    """Why an owner with these many sessions may not have another, or None (exemptions are the caller's).
    The limits default to the settings."""
    limits = conf.get()
    per_assistant = limits.max_sessions_per_user_per_assistant if per_assistant is None else per_assistant
    total = limits.max_sessions_per_user if total is None else total
    if per_assistant and on_assistant >= per_assistant:
        return f"owner already has {_count(on_assistant, 'session')} with this assistant; the limit is {per_assistant}"
    if total and in_all >= total:
        return f"owner already has {_count(in_all, 'session')} in all; the limit is {total}"
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_session_count(assistant_id: str, owner_id: int, sessions: Sessions) -> None:
    """Raise ``QuotaExceeded`` naming the ``owner`` field when the owner may not have another session.

    Counts ``sessions``, the ``Session`` mirror (applied sessions) as the caller hands it in; the processor
    counts the registry itself, so a burst of creates published before any is applied is refused there, with
    the same reason.
    """
    limits = conf.get()
    if not (limits.max_sessions_per_user or limits.max_sessions_per_user_per_assistant) or exempt(owner_id):
        return
    mine = sessions.filter(owner_id=owner_id)
    reason = session_refusal(on_assistant=mine.filter(assistant_id=assistant_id).count(), in_all=mine.count())
    if reason:
        raise QuotaExceeded({"owner": ValidationError(reason, code=QUOTA_EXCEEDED)})


def check_create(assistant, owner_id: int, model: str | None, sessions: Sessions) -> None:
    """Everything a new session must satisfy beyond its own arguments, before any backend call (``sessions``:
    the ``Session`` mirror, as in ``check_session_count``)."""
    errors: dict[str, list[ValidationError]] = {}
    for check in (lambda: check_model(assistant, model),
                  lambda: check_session_count(assistant.id, owner_id, sessions)):
        try:
            check()
        except ValidationError as exc:
            for name, messages in exc.error_dict.items():
                errors.setdefault(name, []).extend(messages)
    if errors:
        kind = QuotaExceeded if "owner" in errors else ModelNotAllowed
        raise kind(errors)


# -- turns per user per minute ----------------------------------------------------------------------------


#: Stand-ins of ``_room_update``'s values: values no caller passes, each of which must come out of the compiler once.
_USER, _ADMIN, _LIMIT = 2**31 - 11, 2**31 - 13, 2**31 - 17  # in the columns' range (else no SQL is made)
_SINCE = datetime.datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=datetime.UTC)


@functools.cache
def _room_update(alias: str) -> tuple[str, list]:
    """``take_turn``'s common statement (room in the window, not exempt) as SQL compiled once: building that
    queryset each turn cost more CPU than the database spends running it. ``(sql, slots)``: a slot names the
    value that replaces a stand-in, or is ``(None, constant)``."""
    connection = connections[alias]
    rows = TurnWindow.objects.using(alias).filter(user_id=_USER)
    superuser = get_user_model().objects.using(alias).filter(pk=_ADMIN, is_superuser=True)
    query = rows.filter(~Exists(superuser), started_at__gt=_SINCE, turns__lt=_LIMIT).query.chain(UpdateQuery)
    query.add_update_values({"turns": F("turns") + 1})
    sql, params = query.get_compiler(alias).as_sql()
    since = TurnWindow._meta.get_field("started_at").get_db_prep_value(_SINCE, connection)
    names = [(_USER, "user"), (_ADMIN, "user"), (_LIMIT, "limit"), (since, "since")]
    slots = [(next((name for stand_in, name in names if isinstance(p, type(stand_in)) and p == stand_in), None), p)
             for p in params]
    if sorted(name for name, _ in slots if name) != ["limit", "since", "user", "user"]:
        raise ValueError(f"the turn window's UPDATE did not compile as expected: {sql} {params}")
    return sql, slots


def _take_room(user_id: int, now: datetime.datetime, limit: int) -> bool:
    """One turn counted in the user's current window, if it has room and the user is not exempt."""
    alias = router.db_for_write(TurnWindow)
    connection = connections[alias]
    sql, slots = _room_update(alias)
    values = {"user": user_id, "limit": limit,
              "since": TurnWindow._meta.get_field("started_at").get_db_prep_value(now - WINDOW, connection)}
    with transaction.mark_for_rollback_on_error(using=alias), connection.cursor() as cursor:
        # a driver's typed integer (psycopg's Int4) keeps its type
        cursor.execute(sql, [constant if not name else values[name] if name == "since" else type(constant)(values[name])
                             for name, constant in slots])
        return cursor.rowcount > 0


def take_turn(user_id: int | None) -> int | None:
    """Count one turn of this user; None when it may run, else the seconds until the window has room.

    One statement in the common case: room in the current window, for a user who is not exempt (the exemption
    is a condition of that UPDATE, so a superuser's turn is counted nowhere). Otherwise, each atomic on every
    database: the exemption, a new window after an old one, or the user's first row (a concurrent first insert
    retries the first).
    """
    limit = conf.get().max_turns_per_user_per_minute
    if not limit or user_id is None:
        return None
    now = timezone.now()
    if _take_room(user_id, now, limit):
        return None
    rows = TurnWindow.objects.filter(user_id=user_id)
    if exempt(user_id):
        return None
    if rows.filter(started_at__lte=now - WINDOW).update(started_at=now, turns=1):
        return None
    try:
        with transaction.atomic():
            TurnWindow.objects.create(user_id=user_id, started_at=now, turns=1)
        return None
    except IntegrityError:  # the row exists (perhaps since a moment ago): room in it is the last chance
        if rows.filter(started_at__gt=now - WINDOW, turns__lt=limit).update(turns=F("turns") + 1):
            return None
    started = rows.values_list("started_at", flat=True).first() or now
    return max(1, math.ceil((started + WINDOW - now).total_seconds()))


def session_model_refusal(session) -> str | None:
    """Why the session's model may no longer be used (the allow-list changed since it was chosen), or None."""
    if not session.model:
        return None
    assistant = _assistant_of(session)
    return None if assistant is None else model_refusal(type(assistant), assistant.model, session.model)


def turn_refusal(session, user_id: int | None) -> tuple[str, str] | None:
    """Take a turn of ``user_id`` in ``session``; ``(code, message)`` when it may not run (a model refused
    takes no turn from the count)."""
    reason = session_model_refusal(session)
    if reason:
        return MODEL_NOT_ALLOWED, f"this session's {reason}; ask for another model"
    wait = take_turn(user_id)
    if wait is None:
        return None
    limit = conf.get().max_turns_per_user_per_minute
    return QUOTA_EXCEEDED, f"more than {_count(limit, 'turn')} per minute; try again in {wait} s"


def check_turn(session, user_id: int | None) -> None:
    """``turn_refusal`` for the Python API: raises ``ModelNotAllowed`` or ``QuotaExceeded``."""
    refusal = turn_refusal(session, user_id)
    if refusal:
        code, message = refusal
        kind = ModelNotAllowed if code == MODEL_NOT_ALLOWED else QuotaExceeded
        raise kind(message, code=code)


# -- the processor's view: events are untrusted -----------------------------------------------------------


def event_limits(assistant_class, assistant_id: str, assistant_model: str | None, owners: set[int],
                 sessions: Sessions) -> dict:
    """What the processor's fold needs to hold a batch's events to the same limits (``apply.Facts`` fields).

    Two queries at most: which owners are exempt, and their sessions on other assistants (``sessions``, the
    ``Session`` mirror the caller hands in); the sessions on this assistant are counted from its registry by
    the fold.
    """
    limits = conf.get()
    session_limits = (limits.max_sessions_per_user_per_assistant, limits.max_sessions_per_user)
    facts = {"model_refusal": lambda model: model_refusal(assistant_class, assistant_model, model),
             "session_limits": session_limits}
    if owners and any(session_limits):
        facts["exempt"] = set(get_user_model().objects.filter(pk__in=owners, is_superuser=True)
                              .values_list("pk", flat=True))
        facts["elsewhere"] = dict(sessions.filter(owner_id__in=owners).exclude(assistant_id=assistant_id)
                                  .values("owner_id").annotate(n=Count("id")).values_list("owner_id", "n"))
    return facts
