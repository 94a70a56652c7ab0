"""Who may read and who may send in a session: the one place the chat page and the WebSocket ask.

The owner reads and sends in their own session. Anyone else needs Django's
permissions on the Session model: ``view_session`` to read, ``change_session``
to send (change implies view, as in the admin). ``is_staff`` alone grants
nothing, and inactive users are nobody. A caller that may not read a session
is told exactly what it is told for an id that does not exist.

Open WebSockets follow the account: ``connection_state`` re-reads the user,
their Django session and their permissions, and signals (logout, a saved or
deleted user, changed permissions or groups) tell the user's open connections
at once, through the channel-layer group ``user_group(pk)``; ``Rechecks`` re-reads
every open connection of the process in rounds, as the safety net behind them.

Only the pages, the consumers and the app's ``ready`` use this module; it sits above the publish queue, whose
``Session`` table it reads and whose channel-layer sender it uses, and above ``ws_database``, whose database
threads (``on_database``) its rounds use.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
from typing import Any

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.module_loading import import_string

from betaassi_django import conf
from betaassi_django.groups import user_group
from betaassi_django.publishing.models import Session
from betaassi_django.publishing.notify import send  # the channel layer's one sender: logs an outage once
from betaassi_django.ws_database import on_database

VIEW_PERMISSION = "betaassi_django.view_session"
CHANGE_PERMISSION = "betaassi_django.change_session"

logger = logging.getLogger("betaassi_django.sessions")


def may_read(user, session) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return session.owner_id == user.pk or user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION)


def may_send(user, session) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return session.owner_id == user.pk or user.has_perm(CHANGE_PERMISSION)


def readable_session(user, assistant_id: str, session_id: str):
    """The session if ``user`` may read it, else None (whether it exists or not: the caller cannot tell)."""
    session = Session.objects.filter(assistant_id=assistant_id, session_id=session_id).first()
    return session if session is not None and may_read(user, session) else None


# -- open connections ---------------------------------------------------------------------------------------


class State(enum.Enum):
    """What an open connection may still do."""

    SEND = "send"
    READ = "read"
    NO_LOGIN = "no_login"  # logged out, password changed, deactivated or deleted: close 4401
    NO_ACCESS = "no_access"  # logged in but may no longer read the session: close 4403


def session_key_digest(session_key: str | None) -> str:
    """How a Django session is named on the channel layer: a digest, never the key (a credential) itself."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()


def logged_in_user(session_key: str | None):
    """The active user the Django session ``session_key`` is logged in as now, or None.

    The same checks as ``django.contrib.auth.get_user``: the session exists, names a user and a backend, the
    backend returns the user (ModelBackend refuses inactive users) and the session's auth hash still matches
    the user's (a changed password logs out every other session)."""
    from importlib import import_module

    from django.conf import settings

    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_pk = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend_path = store[BACKEND_SESSION_KEY]
    except Exception:  # a gone, damaged or anonymous session is no login
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = import_string(backend_path)().get_user(user_pk)
    if user is None or not user.is_active:
        return None
    stored = store.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash()]
    if hasattr(user, "get_session_auth_fallback_hash"):  # SECRET_KEY_FALLBACKS, as get_user accepts them
        hashes += list(user.get_session_auth_fallback_hash())
    return user if any(hmac.compare_digest(stored, known) for known in hashes) else None


def connection_state(session_key: str | None, user_pk, session) -> State:
    """What the connection of ``user_pk`` on Django session ``session_key`` may do in ``session`` (None: a
    session that does not exist) now."""
    return _state_of(logged_in_user(session_key), user_pk, session)


def connection_states(connections: list[tuple[str | None, object, object]]) -> list[State]:
    """``connection_state`` of many ``(session_key, user_pk, session)`` at once (the periodic re-check): each
    login is read once however many connections it holds open, and each user's permissions once (Django
    caches them on the user object)."""
    users: dict = {}
    states = []
    for session_key, user_pk, session in connections:
        if session_key not in users:
            users[session_key] = logged_in_user(session_key)
        states.append(_state_of(users[session_key], user_pk, session))
    return states


def _state_of(user, user_pk, session) -> State:
    if user is None or user.pk != user_pk:
        return State.NO_LOGIN
    if session is None:
        return State.NO_ACCESS
    if may_send(user, session):
        return State.SEND
    return State.READ if may_read(user, session) else State.NO_ACCESS


class Rechecks:
    """The safety net behind the pushes, for every open connection (a consumer: ``session_key``, ``user_pk``,
    ``session``, ``groups_joined`` and ``recheck(state)``, which closes it if ``state`` says so) of an event
    loop at once: a change no signal
    reported (a raw UPDATE, another database writer, an expired session) still closes an idle connection within
    ``BETAASSI_WEBSOCKET_RECHECK_SECONDS``. One task and one database trip per round, each login read once
    (``connection_states``), rather than a task and a trip (with a new connection) per connection: 1,000
    idle connections of one user cost 2 queries per round, not 2,000."""

    _open: dict[asyncio.AbstractEventLoop, set[Any]] = {}
    _tasks: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    @classmethod
    def join(cls, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        cls._open.setdefault(loop, set()).add(consumer)
        task = cls._tasks.get(loop)
        if task is None or task.done():
            cls._tasks[loop] = loop.create_task(cls._every_round(loop))

    @classmethod
    def leave(cls, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        consumers = cls._open.get(loop)
        if consumers is not None:
            consumers.discard(consumer)
            if not consumers:
                del cls._open[loop]
                task = cls._tasks.pop(loop, None)
                if task is not None:
                    task.cancel()

    @classmethod
    async def _every_round(cls, loop: asyncio.AbstractEventLoop) -> None:
        while cls._open.get(loop):
            await asyncio.sleep(conf.get().websocket_recheck_seconds)
            consumers = [c for c in cls._open.get(loop, ()) if c.groups_joined]
            try:
                states = await on_database(connection_states,
                                           [(c.session_key, c.user_pk, c.session) for c in consumers])
                for consumer, state in zip(consumers, states, strict=True):
                    if consumer.groups_joined:
                        await consumer.recheck(state)
            except Exception:  # a database hiccup: the next round tries again
                logger.exception("re-checking %d open connections failed", len(consumers))


# -- telling open connections at once -----------------------------------------------------------------------


def notify(user_pks, logged_out: str | None = None) -> None:
    """Tell the open connections of these users to re-check, once the current transaction commits (so they
    read what was saved); ``logged_out`` names (by digest) a Django session that just logged out."""
    from django.db import transaction

    pks = sorted({pk for pk in user_pks if pk is not None})

    def send_all() -> None:
        for pk in pks:
            send(user_group(pk), {"type": "account.changed", "logged_out": logged_out})

    if pks:
        transaction.on_commit(send_all)


def on_logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        notify([user.pk], logged_out=session_key_digest(getattr(request.session, "session_key", None)))


def on_user_saved(sender, instance, **kwargs) -> None:
    notify([instance.pk])


def _users_of_groups(group_pks) -> list:
    return list(get_user_model().objects.filter(groups__in=group_pks).values_list("pk", flat=True))


def on_user_m2m_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    """A user's groups or permissions changed (from either side)."""
    if action in ("post_add", "post_remove", "post_clear"):
        notify([instance.pk] if not reverse else (pk_set or []))


def on_group_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        notify(_users_of_groups([instance.pk] if not reverse else (pk_set or [])))


def connect_signals() -> None:
    """Wire the signals (from ``AppConfig.ready``); a reverse ``clear()`` is left to the periodic re-check."""
    from django.contrib.auth.models import Group
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import m2m_changed, post_delete, post_save

    user_model = get_user_model()
    user_logged_out.connect(on_logged_out, dispatch_uid="betaassi_access_logged_out")
    post_save.connect(on_user_saved, sender=user_model, dispatch_uid="betaassi_access_user_saved")
    post_delete.connect(on_user_saved, sender=user_model, dispatch_uid="betaassi_access_user_deleted")
    for name in ("groups", "user_permissions"):
        field = getattr(user_model, name, None)
        if field is not None and hasattr(field, "through"):
            m2m_changed.connect(on_user_m2m_changed, sender=field.through, dispatch_uid=f"betaassi_access_{name}")
    m2m_changed.connect(on_group_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid="betaassi_access_group_permissions")
