"""``RunEngine.publish``: which subscribers' streams a run's end event ends (no run, no database: the engine's
subscriptions alone)."""

from __future__ import annotations

import pytest

from betaassi_django.assistants_api import run_events
from betaassi_django.assistants_api.engine import RunEngine
from betaassi_django.assistants_api.run_events import RunEvents

RUN_ID = "run_0123456789abcdefghijklmn"


def _items(events: RunEvents) -> list:
    """What the stream holds now, without waiting."""
    items = []
    while True:
        try:
            items.append(events.get_blocking(timeout=0))
        except TimeoutError:
            return items


def test_a_stream_opened_while_an_end_event_is_pushed_is_not_ended_by_it():
    """A turn that acts on ``requires_action`` as it arrives (a quick function: it submits the output at once)
    subscribes to the run's next execution while the engine's thread is still publishing that event. Its new
    stream must wait for the next execution's events: ended by the event it never received, it had nothing to
    read, and the WebSocket turn stopped without its reply (tests/test_websocket_tools.py, on a loaded machine,
    where the engine's thread was preempted between pushing the event and ending the streams)."""
    engine = RunEngine()
    next_streams: list[RunEvents] = []

    class QuickTurn(RunEvents):
        """Submits its tool outputs, subscribing to the next execution, the moment the event is pushed."""

        def push(self, item: tuple[str, dict] | None) -> None:
            super().push(item)
            if item is not None and item[0] == "thread.run.requires_action":
                next_streams.append(engine.subscribe(RUN_ID))

    turn = QuickTurn()
    token = run_events._listener.set(turn)  # as the turn's listening() block, where the run is created
    try:
        engine.adopt_listener(RUN_ID)
    finally:
        run_events._listener.reset(token)
    engine.publish(RUN_ID, "thread.run.step.delta", {"n": 1})
    engine.publish(RUN_ID, "thread.run.requires_action", {"n": 2})
    assert _items(turn) == [("thread.run.step.delta", {"n": 1}), ("thread.run.requires_action", {"n": 2}), None]
    [after] = next_streams
    assert _items(after) == []  # open, waiting for the next execution

    engine.publish(RUN_ID, "thread.run.in_progress", {"n": 3})
    engine.publish(RUN_ID, "thread.run.completed", {"n": 4})
    assert _items(after) == [("thread.run.in_progress", {"n": 3}), ("thread.run.completed", {"n": 4}), None]
    assert _items(turn) == []  # the first stream had ended: nothing more reached it


@pytest.mark.parametrize("event", ["thread.run.completed", "thread.run.failed", "thread.run.cancelled",
                                   "thread.run.expired", "thread.run.incomplete", "thread.run.requires_action"])
def test_an_end_event_ends_every_stream_it_reaches_and_later_events_reach_none_of_them(event):
    engine = RunEngine()
    first, second = engine.subscribe(RUN_ID), engine.subscribe(RUN_ID)
    other = engine.subscribe("run_other")
    engine.publish(RUN_ID, event, {"n": 1})
    engine.publish(RUN_ID, "thread.run.in_progress", {"n": 2})
    assert _items(first) == _items(second) == [(event, {"n": 1}), None]
    assert _items(other) == []
