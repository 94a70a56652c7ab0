"""Stopping a reply: the ``run.cancel`` frame (the contract: docs/websocket.md), through the project's ASGI stack.

The echo responder streams slowly (``BETAASSI_ECHO_DELAY``) so a run is still answering when the cancel
arrives; the run engine is the embedded API's, in this process. ``test_websocket_live`` does the same
across two daphne processes.
"""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission

from betaassi_django.client import build_async_client, get_client, use_clients
from betaassi_django.publishing.processor import Processor
from tests.test_websocket import _ready, _reply, _turn
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

#: A reply of 62 words, 50 ms apart: about three seconds of streaming.
LONG = "m0" + " word" * 60
NOTHING = "no reply is running in this session"


@pytest.fixture
def support(alice, bob, settings):
    settings.BETAASSI_ECHO_DELAY = 0.05
    support = Support.objects.create(name="support")
    support.sessions.create("chat-1", owner=alice)
    support.sessions.create("bob-1", owner=bob)
    Processor().run_once()
    return support


async def _until(communicator, kind: str) -> list[dict]:
    """Frames up to and including the first of type ``kind``."""
    frames = [await communicator.receive_json_from(timeout=10)]
    while frames[-1]["type"] != kind:
        frames.append(await communicator.receive_json_from(timeout=10))
    return frames


def _stored_reply(thread_id: str, run_id: str):
    page = get_client().beta.threads.messages.list(thread_id, order="asc")
    return [m for m in page.data if m.run_id == run_id]


async def _quiet(communicator) -> None:
    assert await communicator.receive_nothing(timeout=0.3)


async def test_a_cancel_stops_the_reply_for_every_connection_and_keeps_the_partial_text(support, alice):
    canceller, ready = await _ready(support, alice)
    watcher, _ = await _ready(support, alice)
    await canceller.send_json_to({"type": "user.message", "content": LONG})
    head = await _until(canceller, "message.delta")
    run_id = head[1]["run_id"]
    await canceller.send_json_to({"type": "run.cancel"})
    seen = head + await _turn(canceller)
    watched = await _turn(watcher)

    failed = {"type": "run.failed", "run_id": run_id, "error": "cancelled", "status": "cancelled"}
    assert seen[-1] == failed and watched[-1] == failed
    assert [f["type"] for f in seen[:2]] == [f["type"] for f in watched[:2]] == ["message.created", "run.started"]
    for frames in (seen, watched):
        assert not [f for f in frames if f["type"] in ("message.completed", "error")]
        assert {f["run_id"] for f in frames[1:]} == {run_id}
    partial = _reply(seen)
    assert _reply(watched) == partial
    full = f"echo: {LONG} [context=1]"
    assert partial.startswith("echo: ") and full.startswith(partial) and len(partial) < len(full)

    stored = await sync_to_async(_stored_reply)(ready["session"]["thread_id"], run_id)
    assert [(m.role, m.status, m.incomplete_details.reason) for m in stored] == [
        ("assistant", "incomplete", "run_cancelled")]
    assert stored[0].content[0].text.value == partial  # the run keeps exactly the text it streamed
    run = await sync_to_async(get_client().beta.threads.runs.retrieve)(run_id, thread_id=ready["session"]["thread_id"])
    assert run.status == "cancelled" and run.cancelled_at is not None

    await canceller.send_json_to({"type": "user.message", "content": "next"})  # the session goes on
    frames = await _turn(canceller)
    assert frames[-1]["type"] == "message.completed" and _reply(frames) == "echo: next [context=3]"
    assert (await _turn(watcher))[-1] == frames[-1]
    await canceller.disconnect()

    again, ready = await _ready(support, alice)  # the stopped reply is in the history as the run left it
    assert [(m["role"], m["content"], m["run_id"]) for m in ready["history"]][:2] == [
        ("user", LONG, None), ("assistant", partial, run_id)]
    for communicator in (again, watcher):
        await communicator.disconnect()


async def test_a_cancel_naming_the_run_and_a_second_cancel(support, alice):
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": LONG})
    run_id = (await _until(communicator, "message.delta"))[1]["run_id"]
    await communicator.send_json_to({"type": "run.cancel", "run_id": run_id})
    await communicator.send_json_to({"type": "run.cancel", "run_id": run_id})  # cancelling or ended: no harm
    frames = await _until(communicator, "run.failed")
    assert frames[-1] == {"type": "run.failed", "run_id": run_id, "error": "cancelled", "status": "cancelled"}
    errors = [f for f in frames if f["type"] == "error"]
    # The second cancel finds the run cancelling (nothing said) or already ended (nothing is running).
    assert errors in ([], [{"type": "error", "code": "no_active_run", "message": f"{run_id} is not the run "
                                                                                 "answering in this session"}])
    await communicator.send_json_to({"type": "run.cancel", "run_id": run_id})  # ended: no longer active
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error", "code": "no_active_run", "message": f"{run_id} is not the run answering in this session"}
    await communicator.disconnect()


async def test_a_cancel_with_nothing_running_is_refused_and_the_socket_stays_open(support, alice):
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "run.cancel"})  # a new thread: no run at all
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error", "code": "no_active_run", "message": NOTHING}
    await communicator.send_json_to({"type": "user.message", "content": "hi"})
    assert _reply(await _turn(communicator)) == "echo: hi [context=1]"
    await communicator.send_json_to({"type": "run.cancel"})  # its run completed
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error", "code": "no_active_run", "message": NOTHING}
    await _quiet(communicator)
    await communicator.disconnect()


async def test_a_reader_may_not_cancel(support, alice, bob):
    await sync_to_async(bob.user_permissions.add)(await Permission.objects.aget(
        content_type__app_label="betaassi_django", codename="view_session"))
    owner, _ = await _ready(support, alice)
    reader, _ = await _ready(support, bob)
    await owner.send_json_to({"type": "user.message", "content": "m0 word word word"})
    await _until(reader, "message.delta")
    await reader.send_json_to({"type": "run.cancel"})
    frames = await _until(reader, "error")
    assert frames[-1]["code"] == "read_only"
    assert (await _turn(reader))[-1]["type"] == "message.completed"
    completed = (await _turn(owner))[-1]
    assert completed["type"] == "message.completed"
    assert completed["message"]["content"] == "echo: m0 word word word [context=1]"
    for communicator in (owner, reader):
        await communicator.disconnect()


async def test_another_users_run_id_is_never_cancelled(support, alice, bob):
    """Bob names Alice's running run on his own session (idle, then answering): no_active_run, and both runs
    complete."""
    victim, _ = await _ready(support, alice)
    forger, _ = await _ready(support, bob, "bob-1")
    await victim.send_json_to({"type": "user.message", "content": "m0 word word word word word"})
    victims_run = (await _until(victim, "message.delta"))[1]["run_id"]
    refused = {"type": "error", "code": "no_active_run",
               "message": f"{victims_run} is not the run answering in this session"}
    await forger.send_json_to({"type": "run.cancel", "run_id": victims_run})
    assert await forger.receive_json_from(timeout=5) == refused
    await forger.send_json_to({"type": "user.message", "content": "mine"})
    await _until(forger, "run.started")
    await forger.send_json_to({"type": "run.cancel", "run_id": victims_run})
    frames = await _turn(forger)
    assert refused in frames and frames[-1]["type"] == "message.completed"
    assert _reply(frames) == "echo: mine [context=1]"
    completed = (await _turn(victim))[-1]
    assert completed["type"] == "message.completed" and completed["run_id"] == victims_run
    assert completed["message"]["content"] == "echo: m0 word word word word word [context=1]"
    for communicator in (victim, forger):
        await communicator.disconnect()


GARBAGE = [
    ('{"type": "run.cancel", "run_id": ' + "[" * 40 + "]" * 40 + "}", "too_deep",
     "frames nest at most 16 levels of arrays and objects"),
    ('{"type": "run.cancel", "run_id": "\\ud800"}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not '\\ud800'"),
    ('{"type": "run.cancel", "run_id": "run_' + "a" * 10_000 + '"}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not 'run_" + "a" * 32 + "..."),  # 40 characters
    ('{"type": "run.cancel", "run_id": 12}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not 12"),
    ('{"type": "run.cancel", "run_id": null}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not None"),
    ('{"type": "run.cancel", "run_id": "run_abc; DROP"}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not 'run_abc; DROP'"),
    ('{"type": "run.cancel", "run_id": "thread_abc"}', "invalid_run_id",
     "run_id must be a run id ('run_' and letters and digits), not 'thread_abc'"),
    ('{"type": "run.cancel", "thread_id": "thread_abc"}', "unknown_field",
     "unknown field 'thread_id'; a run.cancel has type and an optional run_id"),
    ('{"type": "run.cancel", "content": "stop"}', "unknown_field",
     "unknown field 'content'; a run.cancel has type and an optional run_id"),
]


@pytest.mark.parametrize(("frame", "code", "message"), GARBAGE, ids=range(len(GARBAGE)))
async def test_a_bad_cancel_gets_its_error_and_the_running_reply_goes_on(support, alice, frame, code, message):
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "m0 word word"})
    await _until(communicator, "run.started")
    await communicator.send_to(text_data=frame)
    frames = await _turn(communicator)
    assert [f for f in frames if f["type"] == "error"] == [{"type": "error", "code": code, "message": message}]
    assert frames[-1]["type"] == "message.completed" and _reply(frames) == "echo: m0 word word [context=1]"
    await communicator.disconnect()


async def test_turns_queued_behind_a_cancelled_one_run_in_order(support, alice):
    communicator, _ = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": LONG})
    for text in ("q1", "q2"):  # queued in this process behind the long reply
        await communicator.send_json_to({"type": "user.message", "content": text})
    run_id = (await _until(communicator, "message.delta"))[1]["run_id"]
    await communicator.send_json_to({"type": "run.cancel"})
    stopped = await _turn(communicator)
    assert stopped[-1] == {"type": "run.failed", "run_id": run_id, "error": "cancelled", "status": "cancelled"}
    first, second = await _turn(communicator), await _turn(communicator)
    assert [(f[0]["message"]["content"], f[-1]["type"], _reply(f)) for f in (first, second)] == [
        ("q1", "message.completed", "echo: q1 [context=3]"), ("q2", "message.completed", "echo: q2 [context=5]")]
    assert len({run_id, first[1]["run_id"], second[1]["run_id"]}) == 3
    await _quiet(communicator)
    await communicator.disconnect()


class _EndsAfterTheLook(httpx2.AsyncBaseTransport):
    """The run ends between the cancel's look at the thread (its runs list) and its cancel request: after the
    list is answered, the request waits until the run has completed, as on a busy server."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, thread_id: str) -> None:
        self.inner, self.thread_id, self.seen = inner, thread_id, []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append((request.method, request.url.path.split("/")[-1]))
        if request.method == "GET" and request.url.path.endswith(f"/threads/{self.thread_id}/runs"):
            await response.aread()
            run = (await sync_to_async(get_client().beta.threads.runs.list)(self.thread_id, limit=1)).data[0]
            while run.status != "completed":
                await asyncio.sleep(0.02)
                run = await sync_to_async(get_client().beta.threads.runs.retrieve)(run.id, thread_id=self.thread_id)
        return response


async def test_a_run_that_ends_before_the_cancel_reaches_it_is_no_active_run(support, alice):
    """The API refuses to cancel a run that has ended (400): that is no_active_run, not a server error."""
    communicator, ready = await _ready(support, alice)
    await communicator.send_json_to({"type": "user.message", "content": "m0 word word"})
    run_id = (await _until(communicator, "message.delta"))[1]["run_id"]
    racing = _EndsAfterTheLook(None, ready["session"]["thread_id"])
    api = build_async_client(max_retries=0, wrap_transport=lambda inner: setattr(racing, "inner", inner) or racing)
    with use_clients(async_=api):
        await communicator.send_json_to({"type": "run.cancel", "run_id": run_id})
        frames = await _until(communicator, "error")
    while "message.completed" not in [f["type"] for f in frames]:  # the turn's end, before or after the error
        frames.append(await communicator.receive_json_from(timeout=10))
    assert [f for f in frames if f["type"] == "error"] == [{
        "type": "error", "code": "no_active_run", "message": f"{run_id} is not the run answering in this session"}]
    assert racing.seen == [("GET", "runs"), ("POST", "cancel"), ("GET", run_id)]  # looked, refused, read again
    completed = [f for f in frames if f["type"] == "message.completed"]
    assert [(f["run_id"], f["message"]["content"]) for f in completed] == [(run_id, "echo: m0 word word [context=1]")]
    assert not [f for f in frames if f["type"] == "run.failed"]
    await communicator.send_json_to({"type": "user.message", "content": "still here"})
    assert _reply(await _turn(communicator)) == "echo: still here [context=3]"
    await communicator.disconnect()



class _Opaque(httpx2.AsyncBaseTransport):
    """The in-process transport under a name ``client.in_process`` does not follow: the turn reads its run's
    events as the SDK parses them from the server-sent stream, as it does against a remote backend."""

    def __init__(self, wrapped: httpx2.AsyncBaseTransport) -> None:
        self.wrapped = wrapped

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.wrapped.handle_async_request(request)


@pytest.mark.parametrize("events", ["engine", "server-sent"])
async def test_a_reply_whose_thread_is_deleted_meanwhile_ends_the_turn_for_every_connection(support, alice, events):
    """The run's stream stops with an ``error`` event when its thread is deleted while it answers (by an operator,
    another deployment): every connection gets ``run.failed`` with that reason, rather than waiting for an end."""
    api = build_async_client(max_retries=0, wrap_transport=_Opaque) if events == "server-sent" else None
    sender, ready = await _ready(support, alice)
    watcher, _ = await _ready(support, alice)
    with use_clients(async_=api):
        await sender.send_json_to({"type": "user.message", "content": LONG})
        head = await _until(sender, "message.delta")
        run_id = head[1]["run_id"]
        await sync_to_async(get_client().beta.threads.delete)(ready["session"]["thread_id"])
        frames = head + await _turn(sender)
    failed = {"type": "run.failed", "run_id": run_id, "error": f"Run {run_id} was deleted while executing.",
              "status": None}
    assert frames[-1] == failed and (await _turn(watcher))[-1] == failed
    assert [f for f in frames if f["type"] == "message.completed"] == []
    for communicator in (sender, watcher):
        await communicator.disconnect()
