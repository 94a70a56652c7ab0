"""The WebSocket protocol of a session (DESIGN.md section 8).

A connection is accepted first and then, if it may not stay, closed with the
contract's code (4401 not logged in, 4403 not yours, 4404 unknown session):
a close before the handshake would reach the browser as a bare HTTP 403.
Bad frames get an ``error`` frame and the connection stays open.
"""

from __future__ import annotations

import json
import time

from channels.generic.websocket import AsyncWebsocketConsumer

from betaassi_django import turns
from betaassi_django.publishing.signals import assistant_group, session_group

#: Largest frame accepted, in bytes of UTF-8.
MAX_FRAME_BYTES = 64 * 1024
#: Largest ``user.message`` content, in bytes of UTF-8.
MAX_CONTENT_BYTES = 32 * 1024
#: Frames a connection may send in a burst, and the sustained rate per second after it.
RATE_BURST, RATE_PER_SECOND = 20, 5.0
#: Rate-limited frames in a row after which the connection is closed (code 4429).
FLOOD_CLOSE_AFTER = 50

CLOSE_NOT_LOGGED_IN, CLOSE_FORBIDDEN, CLOSE_UNKNOWN, CLOSE_FLOOD = 4401, 4403, 4404, 4429


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

    async def connect(self) -> None:
        from betaassi_django.models import Session

        route = self.scope["url_route"]["kwargs"]
        self.assistant_id, self.session_id = route["assistant_id"], route["session_id"]
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(CLOSE_NOT_LOGGED_IN)
            return
        session = await Session.objects.filter(assistant_id=self.assistant_id, session_id=self.session_id).afirst()
        if session is None:
            await self.close(CLOSE_UNKNOWN)
            return
        if session.owner_id != user.pk and not user.is_staff:
            await self.close(CLOSE_FORBIDDEN)
            return
        self.session, self.bucket, self.flooding = session, _Bucket(RATE_BURST, RATE_PER_SECOND), 0
        self.groups_joined = (session_group(self.assistant_id, self.session_id), assistant_group(self.assistant_id))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self._send({"type": "session.ready", "session": turns.session_frame(session),
                          "history": await turns.history(session.thread_id)})

    async def disconnect(self, code) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

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
        if text_data is None:
            await self._error("bad_frame", "frames are JSON text, not binary")
            return
        if len(text_data.encode()) > MAX_FRAME_BYTES:
            await self._error("frame_too_large", f"frames are at most {MAX_FRAME_BYTES} bytes")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self._error("invalid_json", "frames are JSON objects")
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind != "user.message":
            await self._error("unknown_type", f"unknown frame type {kind!r}; expected 'user.message'")
            return
        await self._user_message(frame.get("content"))

    async def _user_message(self, content) -> None:
        if not isinstance(content, str) or not content.strip():
            await self._error("invalid_content", "content must be a non-empty string")
        elif len(content.encode()) > MAX_CONTENT_BYTES:
            await self._error("content_too_long", f"content is at most {MAX_CONTENT_BYTES} bytes")
        elif not turns.submit(self.session, content):
            await self._error("busy", f"{turns.MAX_PENDING_TURNS} messages are already waiting for a reply")

    # -- from the channel layer ------------------------------------------------------------------------

    async def session_frame(self, event: dict) -> None:
        """A frame of a turn, sent to every connection to the session."""
        await self._send(event["frame"])

    async def publish_applied(self, event: dict) -> None:
        """The processor applied events of this assistant: push the ones about this session."""
        from betaassi_django.models import Session

        mine = [e for e in event["events"]
                if e.get("session_id") == self.session_id and e.get("status") in ("applied", "replayed")]
        if not mine:
            return
        session = await Session.objects.filter(assistant_id=self.assistant_id, session_id=self.session_id).afirst()
        if session is None:
            await self._send({"type": "session.deleted"})
            await self.close(1000)
        else:
            self.session = session  # this connection's next turns use the new kind and model
            await self._send({"type": "session.updated", "session": turns.session_frame(session)})

    # -- helpers ---------------------------------------------------------------------------------------

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def _error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
