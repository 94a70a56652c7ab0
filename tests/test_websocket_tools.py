"""``tool.started`` / ``tool.completed``: the function tools a WebSocket turn runs, as every connection sees them.

The model is the fake upstream (``tests/fake_upstream.py``) calling the weather desk's functions
(``tests/test_tools_sessions``); the frames go through the project's ASGI stack to two connections.
"""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from betaassi_django.client import get_client
from tests.fake_upstream import Calls, Text
from tests.test_tools_sessions import desk, fake  # noqa: F401 (fixtures)
from tests.test_websocket import _ready, _reply, _turn

pytestmark = pytest.mark.django_db(transaction=True)


def _calls_of(thread_id: str, run_id: str) -> list[tuple[str, str]]:
    """``(call id, function name)`` of every function call of the run, in the order the model made them."""
    steps = get_client().beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc")
    return [(c.id, c.function.name) for s in steps.data if s.type == "tool_calls" for c in s.step_details.tool_calls]


def _tool_frames(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"].startswith("tool.")]


async def test_every_connection_sees_each_function_start_and_end(desk, fake, alice, settings):  # noqa: F811
    settings.BETAASSI_TOOL_TIMEOUT = 0.6  # slow_lookup times out after the run was looked at twice (still waiting)
    fake.script(Calls([("get_weather", '{"city": "Oslo"}'), ("open_ticket", '{"summary": "x"}'),
                       ("launch_rocket", "{}"), ("slow_lookup", '{"query": "q"}'), ("get_weather", '{"town": "x"}')],
                      text=["Let me look. "]),
                Calls([("get_time", '{"city": "Oslo"}')]),
                Text(["Oslo: ", "21C."]))
    sender, ready = await _ready(desk, alice, "chat")
    watcher, _ = await _ready(desk, alice, "chat")
    await sender.send_json_to({"type": "user.message", "content": "Oslo?"})
    frames = await _turn(sender)  # the first reply message completes before the functions run
    frames += await _turn(sender)
    watched = await _turn(watcher) + await _turn(watcher)
    assert watched == frames
    run_id = frames[1]["run_id"]
    calls = await sync_to_async(_calls_of)(ready["session"]["thread_id"], run_id)
    assert [name for _, name in calls] == [
        "get_weather", "open_ticket", "launch_rocket", "slow_lookup", "get_weather", "get_time"]
    ok = [True, False, False, False, False, True]  # raised, unknown, timed out, bad arguments: False

    tools = _tool_frames(frames)
    for (call_id, name), done in zip(calls, ok, strict=True):
        base = {"run_id": run_id, "call_id": call_id, "name": name}
        started, completed = {"type": "tool.started", **base}, {"type": "tool.completed", **base, "ok": done}
        assert tools.count(started) == 1 and tools.count(completed) == 1
        assert tools.index(started) < tools.index(completed)
    assert len(tools) == 2 * len(calls)
    # The first round's calls run together; the second round's call follows all of their ends.
    first, second = [c for c, _ in calls[:5]], calls[5][0]
    assert {f["call_id"] for f in tools[:10]} == set(first)
    assert tools[-2:] == [{"type": "tool.started", "run_id": run_id, "call_id": second, "name": "get_time"},
                          {"type": "tool.completed", "run_id": run_id, "call_id": second, "name": "get_time",
                           "ok": True}]

    kinds = [f["type"] for f in frames]
    first_text_done = kinds.index("message.completed")
    assert kinds.index("tool.started") > first_text_done  # the text before the calls is shown before them
    assert kinds[-1] == "message.completed" and frames[-1]["message"]["content"] == "Oslo: 21C."
    assert _reply(frames) == "Let me look. Oslo: 21C."
    for communicator in (sender, watcher):
        await communicator.disconnect()


async def test_a_plain_turn_has_no_tool_frames(desk, fake, alice):  # noqa: F811
    fake.script(Text(["Just ", "text."]))
    communicator, _ = await _ready(desk, alice, "chat")
    await communicator.send_json_to({"type": "user.message", "content": "hi"})
    frames = await _turn(communicator)
    assert {f["type"] for f in frames} == {"message.created", "run.started", "message.delta", "message.completed"}
    assert _reply(frames) == "Just text."
    await communicator.disconnect()


async def test_a_cancel_while_a_function_runs_ends_the_turn_at_once(desk, fake, alice):  # noqa: F811
    """The run waits for the function's output when it is cancelled: it ends at once, the turn notices within
    ``TOOL_WATCH_SECONDS`` and stops the function (``slow_lookup`` would take 5 s; the tool timeout is 30 s)."""
    fake.script(Calls([("slow_lookup", '{"query": "q"}')]))
    canceller, ready = await _ready(desk, alice, "chat")
    watcher, _ = await _ready(desk, alice, "chat")
    await canceller.send_json_to({"type": "user.message", "content": "look it up"})
    frames = [await canceller.receive_json_from(timeout=10)]
    while frames[-1]["type"] != "tool.started":
        frames.append(await canceller.receive_json_from(timeout=10))
    run_id = frames[-1]["run_id"]
    await canceller.send_json_to({"type": "run.cancel"})
    asked = time.monotonic()
    frames += await _turn(canceller)
    assert time.monotonic() - asked < 2.5  # not the function's 5 s
    assert [f["type"] for f in frames] == ["message.created", "run.started", "tool.started", "tool.completed",
                                           "run.failed"]
    assert frames[3] == {**frames[2], "type": "tool.completed", "ok": False}  # stopped: it did not return
    assert frames[4] == {"type": "run.failed", "run_id": run_id, "error": "cancelled", "status": "cancelled"}
    assert await _turn(watcher) == frames
    run = await sync_to_async(get_client().beta.threads.runs.retrieve)(run_id, thread_id=ready["session"]["thread_id"])
    assert run.status == "cancelled"
    assert len(fake.requests) == 1  # the output never reached the model

    fake.script(Text(["fine."]))
    await canceller.send_json_to({"type": "user.message", "content": "again"})  # the session goes on
    assert _reply(await _turn(canceller)) == "fine."
    for communicator in (canceller, watcher):
        await communicator.disconnect()
