"""The WebSocket protocol of a session (the contract: docs/websocket.md).

A connection is accepted first and then, if it may not stay, closed with the
contract's code (4401 not logged in, 4404 no such session or not one the user
may read: the two are told apart by nobody): a close before the handshake
would reach the browser as a bare HTTP 403. An open connection follows its
account (``access``): before each turn, on a push to the user's group and every
few seconds it is re-checked, and closed with 4401 when the login is gone or
4403 when the user may no longer read the session.
Bad frames get an ``error`` frame and the connection stays open: every client
frame is checked by ``parse_frame`` before anything else sees it, and no frame
can raise out of ``receive`` (which Channels would turn into a 1011 close).
"""

from __future__ import annotations

import json
import logging
import re
import time

from channels.generic.websocket import AsyncWebsocketConsumer

from betaassi_django import access, frames, quotas, turns, ws_database
from betaassi_django.groups import assistant_group, listen, origin, session_group, unlisten, user_group

#: Largest frame accepted, in bytes of UTF-8.
MAX_FRAME_BYTES = 64 * 1024
#: Largest ``user.message`` content, in bytes of UTF-8.
MAX_CONTENT_BYTES = 32 * 1024
#: Deepest nesting of arrays and objects in a frame (a ``user.message`` has 1).
MAX_DEPTH = 16
#: The fields of a ``user.message``; any other is refused (``unknown_field``).
USER_MESSAGE_FIELDS = frozenset({"type", "content"})
#: The fields of a ``run.cancel``.
RUN_CANCEL_FIELDS = frozenset({"type", "run_id"})
#: A run id as the API makes them (``run_`` and 24 letters and digits; up to 64 for another backend's).
RUN_ID = re.compile(r"run_[A-Za-z0-9]{1,64}")
#: Frames a connection may send in a burst, and the sustained rate per second after it.
RATE_BURST, RATE_PER_SECOND = 20, 5.0
#: Rate-limited frames in a row after which the connection is closed (code 4429).
FLOOD_CLOSE_AFTER = 50

CLOSE_NOT_LOGGED_IN, CLOSE_FORBIDDEN, CLOSE_UNKNOWN, CLOSE_FLOOD = 4401, 4403, 4404, 4429

logger = logging.getLogger("betaassi_django.sessions")


class BadFrame(Exception):
    """A client frame that is refused with an ``error`` frame: ``code`` and ``message`` as sent."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _shown(value, limit: int = 40) -> str:
    """A client's value inside an error message: ASCII, short, whatever it holds (lone surrogates too)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {list: "an array", str: "a string"}.get(type(value), "a number")


def _depth(value) -> int:
    """The nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (a JSON ``\\ud800`` decodes to one), or None."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def parse_frame(text: str | None) -> tuple[str, str | None]:
    """A valid frame as ``(type, value)``: ``("user.message", content)`` or ``("run.cancel", run_id or None)``;
    raises ``BadFrame`` (and nothing else) for any other."""
    if text is None:
        raise BadFrame("bad_frame", "frames are JSON text, not binary")
    if _lone_surrogate(text) is not None:  # only an in-process sender can do this: the wire is UTF-8
        raise BadFrame("bad_frame", "frames are UTF-8 text")
    if len(text.encode()) > MAX_FRAME_BYTES:
        raise BadFrame("frame_too_large", f"frames are at most {MAX_FRAME_BYTES} bytes")
    try:
        frame = json.loads(text)
    except RecursionError:
        raise BadFrame("too_deep", f"frames nest at most {MAX_DEPTH} levels of arrays and objects") from None
    except json.JSONDecodeError as exc:
        raise BadFrame("invalid_json", f"frames are JSON objects: {exc.msg} at character {exc.pos}") from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise BadFrame("invalid_json", "frames are JSON objects: a number has too many digits") from None
    if _depth(frame) > MAX_DEPTH:
        raise BadFrame("too_deep", f"frames nest at most {MAX_DEPTH} levels of arrays and objects")
    if not isinstance(frame, dict):
        raise BadFrame("invalid_json", f"a frame is a JSON object, not {_json_type(frame)}")
    kind = frame.get("type")
    if kind not in ("user.message", "run.cancel"):
        raise BadFrame("unknown_type", f"unknown frame type {_shown(kind)}; expected 'user.message' or 'run.cancel'")
    unknown = sorted(frame.keys() - (USER_MESSAGE_FIELDS if kind == "user.message" else RUN_CANCEL_FIELDS))
    if unknown:
        fields = "type and content" if kind == "user.message" else "type and an optional run_id"
        raise BadFrame("unknown_field", f"unknown field {_shown(unknown[0])}; a {kind} has {fields}")
    if kind == "run.cancel":
        return kind, _run_id(frame["run_id"]) if "run_id" in frame else None
    return kind, _content(frame.get("content"))


def _run_id(run_id) -> str:
    if not (isinstance(run_id, str) and RUN_ID.fullmatch(run_id)):
        raise BadFrame("invalid_run_id", f"run_id must be a run id ('run_' and letters and digits), "
                                         f"not {_shown(run_id)}")
    return run_id


def _content(content) -> str:
    if not isinstance(content, str) or not content.strip():
        raise BadFrame("invalid_content", "content must be a non-empty string")
    at = _lone_surrogate(content)
    if at is not None:
        raise BadFrame("invalid_content", f"content must be valid Unicode: a lone surrogate at index {at}")
    if "\x00" in content:
        raise BadFrame("invalid_content", "content must not contain null characters")
    if len(content.encode()) > MAX_CONTENT_BYTES:
        raise BadFrame("content_too_long", f"content is at most {MAX_CONTENT_BYTES} bytes")
    return content


class _Bucket:
    """A token bucket: ``take()`` is False when the sender is over its rate."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class SessionConsumer(AsyncWebsocketConsumer):
    """``ws/assistants/<assistant_id>/sessions/<session_id>/``: one user talking in one session."""

    groups_joined: tuple[str, ...] = ()
    early: list[str] | None = None

    async def connect(self) -> None:
        route = self.scope["url_route"]["kwargs"]
        self.assistant_id, self.session_id = route["assistant_id"], route["session_id"]
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(CLOSE_NOT_LOGGED_IN)
            return
        self.user_pk, self.session_key = user.pk, getattr(self.scope.get("session"), "session_key", None)
        session, state = await ws_database.on_database(_session_and_state, self.session_key, self.user_pk,
                                                       self.assistant_id, self.session_id)
        if state is access.State.NO_LOGIN:
            await self.close(CLOSE_NOT_LOGGED_IN)
            return
        if state is access.State.NO_ACCESS:  # whether it exists or not: the same answer
            await self.close(CLOSE_UNKNOWN)
            return
        self.session, self.bucket, self.flooding = session, _Bucket(RATE_BURST, RATE_PER_SECOND), 0
        self.groups_joined = (session_group(self.assistant_id, self.session_id), assistant_group(self.assistant_id),
                              user_group(self.user_pk))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.early: list[str] | None = []  # frames of a running turn that arrive before session.ready
        listen(self.groups_joined[0], self, self._deliver)
        access.Rechecks.join(self)
        await self._send({"type": "session.ready", "session": frames.session_frame(session),
                          "history": await frames.history(session.thread_id)})
        while self.early:  # then those, in order (one more may arrive while one is sent)
            await self.send(text_data=self.early.pop(0))
        self.early = None

    async def disconnect(self, code) -> None:
        access.Rechecks.leave(self)
        if self.groups_joined:
            unlisten(self.groups_joined[0], self)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    # -- the account behind the connection -------------------------------------------------------------

    async def _state(self, session=None) -> access.State:
        session = session if session is not None or not self.groups_joined else self.session
        return await ws_database.on_database(access.connection_state, self.session_key, self.user_pk, session)

    async def recheck(self, state: access.State | None = None) -> access.State:
        """Close the connection if its login is gone (4401) or it may no longer read (4403)."""
        state = state if state is not None else await self._state()
        if state in (access.State.NO_LOGIN, access.State.NO_ACCESS) and self.groups_joined:
            await self._close_for(CLOSE_NOT_LOGGED_IN if state is access.State.NO_LOGIN else CLOSE_FORBIDDEN)
        return state

    async def _close_for(self, code: int) -> None:
        if self.groups_joined:
            unlisten(self.groups_joined[0], self)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = ()  # no more frames for this connection, in or out
        await self.close(code)

    async def _may_send_now(self) -> bool:
        return await self._state() is access.State.SEND

    async def account_changed(self, event: dict) -> None:
        """The user logged out, was saved or deleted, or their permissions changed: re-check now."""
        if not self.groups_joined:
            return
        if event.get("logged_out") == access.session_key_digest(self.session_key):
            await self._close_for(CLOSE_NOT_LOGGED_IN)
            return
        await self.recheck()

    # -- from the client -------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.groups_joined:  # closing: a refused connection reads nothing
            return
        if not self.bucket.take():
            self.flooding += 1
            if self.flooding >= FLOOD_CLOSE_AFTER:
                await self.close(CLOSE_FLOOD)
            else:
                await self._error("rate_limited", f"more than {RATE_PER_SECOND:g} frames per second; slow down")
            return
        self.flooding = 0
        try:
            kind, value = parse_frame(text_data)
        except BadFrame as bad:
            await self._error(bad.code, bad.message)
            return
        state, refusal = await ws_database.on_database(_admission, self.session_key, self.user_pk, self.session,
                                                       kind == "user.message")
        state = await self.recheck(state)
        if state is access.State.READ:
            await self._error("read_only", "you may read this session but not send in it "
                                           "(sending in another user's session needs the change_session permission)")
            return
        if state is not access.State.SEND:
            return
        if kind == "run.cancel":
            await self._cancel(value)
            return
        if refusal:  # over the user's turns per minute, or a model no longer allowed: say so, stay open
            await self._error(*refusal)
            return
        try:
            accepted = turns.submit(self.session, value, allowed=self._may_send_now)
        except Exception:  # a bug must not close the connection with 1011: say so, log it, stay open
            logger.exception("A user.message of session %s of %s failed", self.session_id, self.assistant_id)
            await self._error("server_error", "the message could not be taken; try again")
            return
        if not accepted:
            await self._error("busy", f"{turns.MAX_PENDING_TURNS} messages are already waiting for a reply")

    async def _cancel(self, run_id: str | None) -> None:
        """Stop the session's active run, whoever started it (its end reaches every connection as run.failed)."""
        try:
            cancelled = await turns.cancel(self.session, run_id)
        except Exception:  # as for a message: say so, log it, stay open
            logger.exception("A run.cancel of session %s of %s failed", self.session_id, self.assistant_id)
            await self._error("server_error", "the run could not be cancelled; try again")
            return
        if not cancelled:
            await self._error("no_active_run", "no reply is running in this session" if run_id is None
                              else f"{run_id} is not the run answering in this session")

    # -- from the channel layer ------------------------------------------------------------------------

    async def session_frame(self, event: dict) -> None:
        """A frame of a turn another process runs, sent to every connection to the session (this process's
        turns reach this connection directly: ``_deliver``)."""
        if self.groups_joined and event.get("origin") != origin():  # none after the connection was refused
            await self._send(event["frame"])

    async def _deliver(self, text: str) -> None:
        """A frame of a turn this process runs (``groups.listen``), already encoded; held until ``session.ready``
        is sent (through the layer, the consumer's one-at-a-time dispatch held it)."""
        if self.early is not None:
            self.early.append(text)
        elif self.groups_joined:
            await self.send(text_data=text)

    async def publish_applied(self, event: dict) -> None:
        """The processor applied events of this assistant: push the ones about this session."""
        from betaassi_django.models import Session

        if not self.groups_joined:
            return
        mine = [e for e in event["events"]
                if e.get("session_id") == self.session_id and e.get("status") in ("applied", "replayed")]
        if not mine:
            return
        session = await Session.objects.filter(assistant_id=self.assistant_id, session_id=self.session_id).afirst()
        if session is None:
            await self._send({"type": "session.deleted"})
            await self.close(1000)
        else:
            known, self.session = self.session, session  # this connection's next turns use the new kind and model
            if await self.recheck() not in (access.State.SEND, access.State.READ):
                return  # the session as it is now is not this user's to read: closed, nothing sent
            if frames.settings_of(session) != frames.settings_of(known):
                await self._send({"type": "session.updated", "session": frames.session_frame(session)})
            # else a notice of what this connection already has, e.g. its session's creation relayed late

    # -- helpers ---------------------------------------------------------------------------------------

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def _error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})


def _session_and_state(session_key: str | None, user_pk, assistant_id: str, session_id: str):
    """At connect: the session (None: no such session) and what the user may do in it, in one trip."""
    from betaassi_django.models import Session

    session = Session.objects.filter(assistant_id=assistant_id, session_id=session_id).first()
    return session, access.connection_state(session_key, user_pk, session)


def _admission(session_key: str | None, user_pk, session, turn: bool = True
               ) -> tuple[access.State, tuple[str, str] | None]:
    """What the sender may do now and, when they may send a ``turn``, why it may not run (quota, model): one
    trip to the database per frame."""
    state = access.connection_state(session_key, user_pk, session)
    return state, quotas.turn_refusal(session, user_pk) if turn and state is access.State.SEND else None
