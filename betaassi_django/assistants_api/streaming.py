"""Server-sent events for ``stream: true``, in the specification's format."""

from __future__ import annotations

import json

from django.http import StreamingHttpResponse

from .engine import engine
from .run_events import RunEvents

DONE = b"event: done\ndata: [DONE]\n\n"


def encode(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class RunEventStream:
    """Async iterator of SSE frames: the prelude, then the run's live events, then ``done``.

    A class rather than an async generator, so that the sync in-process
    transport can drive it one frame at a time from short-lived event loops.
    """

    def __init__(self, run_id: str, events: RunEvents, prelude: list[tuple[str, dict]]) -> None:
        self.run_id = run_id
        self._events = events
        self._prelude = list(prelude)
        self._finished = False

    def __aiter__(self) -> RunEventStream:
        return self

    async def __anext__(self) -> bytes:
        if self._prelude:
            return encode(*self._prelude.pop(0))
        if self._finished:
            raise StopAsyncIteration
        item = await self._events.get()
        if item is None:
            self._finished = True
            return DONE
        return encode(*item)

    def close(self) -> None:
        """Stop listening (the client went away)."""
        self._finished = True
        engine.unsubscribe(self.run_id, self._events)


class SSEResponse(StreamingHttpResponse):
    """A streamed run; ``events`` is the frame iterator the in-process transport reads directly."""

    def __init__(self, events: RunEventStream) -> None:
        super().__init__(events, content_type="text/event-stream; charset=utf-8")
        self.events = events
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"

    def close(self) -> None:
        self.events.close()
        super().close()
