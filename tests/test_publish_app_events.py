"""Application events (``app.event``): published in order with the session events, validated before any backend
call, passed by the processor; and the verdicts it writes onto the message of every noop or rejected event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from betaassi_django.client import get_client
from betaassi_django.messages import text_of
from betaassi_django.models import PublishedEvent
from betaassi_django.publishing.backend import PUBLISH_KEY
from betaassi_django.publishing.events import MAX_BODY_LENGTH, Event, Rejected, parse
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def nested(depth: int):
    """``depth`` arrays, one inside the other."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def messages(support) -> list:
    return list(get_client().beta.threads.messages.list(support.metadata[PUBLISH_KEY], order="asc"))


def raw(support, body) -> str:
    """A body written straight to the publish thread, as any process with an API key can."""
    content = body if isinstance(body, str) else json.dumps(body)
    return get_client().beta.threads.messages.create(support.metadata[PUBLISH_KEY], role="user", content=content).id


def test_app_events_pass_in_order_with_the_session_events(backend, alice):
    support = Support.objects.create()
    first = support.publish("order.created", {"order": 41, "lines": [{"sku": "é-1", "qty": 2}]})
    created = support.sessions.create("s1", owner=alice)
    second = support.publish("order.shipped")
    assert Processor().run_once() == 3
    listed = messages(support)
    assert [m.id for m in listed] == [first, created, second]
    assert json.loads(text_of(listed[0])) == {"v": 1, "op": "app.event", "session_id": None, "args": {
        "type": "order.created", "data": {"order": 41, "lines": [{"sku": "é-1", "qty": 2}]}}}
    assert json.loads(text_of(listed[2]))["args"] == {"type": "order.shipped", "data": None}
    assert [dict(m.metadata) for m in listed] == [{"betaassi_event": "app.event"}, {"betaassi_event": "session.create"},
                                                  {"betaassi_event": "app.event"}]  # passed: no verdict written
    assert list(PublishedEvent.objects.order_by("processed_at").values_list("event_id", "op", "status", "reason")) == [
        (first, "app.event", "passed", ""), (created, "session.create", "applied", ""),
        (second, "app.event", "passed", "")]
    assert support.sessions.get("s1").owner_id == alice.pk


def test_publish_waits_for_the_processor(processor):
    support = Support.objects.create()
    event_id = support.publish("tick", 1, wait=True)
    record = PublishedEvent.objects.get(event_id=event_id)
    assert (record.op, record.status, record.session_id) == ("app.event", "passed", None)


def test_apublish_is_the_async_twin(processor):
    support = Support.objects.create()

    async def publish() -> tuple[str, str]:
        return await support.apublish("a:b_c-d.e", {"x": [True, None, 1.5]}), await support.apublish(
            "second", "text", wait=True)

    first, second = asyncio.run(publish())
    assert [m.id for m in messages(support)] == [first, second]
    assert dict(PublishedEvent.objects.filter(event_id__in=[first, second]).values_list("event_id", "status")) == {
        first: "passed", second: "passed"}


@pytest.mark.parametrize(("call", "field", "message"), [
    (lambda s: s.publish(""), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish("t" * 65), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish("-order"), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish("order created"), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish("order\n"), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish(7), "type", "type must be 1 to 64 characters"),
    (lambda s: s.publish("betaassi.mirror"), "type", "type must not start with 'betaassi.'"),
    (lambda s: s.publish("t", {1: "a"}), "data", "data keys must be strings"),
    (lambda s: s.publish("t", {"\ud800": 1}), "data", "data keys must be strings without lone surrogates"),
    (lambda s: s.publish("t", ["ok", "\udfff"]), "data", "data strings must not hold lone surrogates"),
    (lambda s: s.publish("t", float("nan")), "data", "data numbers must be finite"),
    (lambda s: s.publish("t", {"x": float("inf")}), "data", "data numbers must be finite"),
    (lambda s: s.publish("t", {1, 2}), "data", "data must be JSON: set is not"),
    (lambda s: s.publish("t", nested(33)), "data", "data must nest at most 32 arrays or objects deep"),
    (lambda s: s.publish("t", 10 ** 5000), "data", "data cannot be written as JSON"),
    (lambda s: s.publish("t", "x" * MAX_BODY_LENGTH), "data", "data is too large"),
    (lambda s: s.publish("t", "é" * 6000), "data", "data is too large"),  # 6 characters each, escaped
])
def test_bad_events_are_refused_before_any_backend_call(call, field, message):
    support = Support.objects.create()
    with pytest.raises(ValidationError) as info:
        call(support)
    assert list(info.value.message_dict) == [field]
    assert info.value.message_dict[field][0].startswith(message)
    assert messages(support) == []


def test_the_limits_are_inclusive():
    support = Support.objects.create()
    longest = "t" * 64
    assert parse(json.dumps({"v": 1, "op": "app.event", "args": {"type": longest, "data": nested(32)}})) == Event(
        "app.event", None, {"type": longest, "data": nested(32)})
    overhead = len(Event("app.event", None, {"type": "t", "data": ""}).to_json())
    support.publish("t", "x" * (MAX_BODY_LENGTH - overhead))  # exactly the limit
    support.publish(longest, nested(32))
    assert len(text_of(messages(support)[0])) == MAX_BODY_LENGTH
    Processor().run_once()
    assert list(PublishedEvent.objects.values_list("status", flat=True)) == ["passed", "passed"]


@pytest.mark.parametrize(("body", "reason"), [
    ({"v": 1, "op": "app.event", "session_id": "s1", "args": {"type": "t"}}, "app.event takes no session_id"),
    ({"v": 1, "op": "app.event", "args": {"type": "t", "extra": 1}}, "unknown argument 'extra'"),
    ({"v": 1, "op": "app.event", "args": {"data": 1}}, "type must be 1 to 64 characters"),
    ({"v": 1, "op": "app.event", "args": {"type": "betaassi.x"}}, "type must not start with 'betaassi.'"),
    ({"v": 1, "op": "app.event", "args": {"type": "t", "data": nested(33)}},
     "data must nest at most 32 arrays or objects deep"),
    ('{"v":1,"op":"app.event","args":{"type":"t","data":"\\ud800"}}', "data strings must not hold lone surrogates"),
    ('{"v":1,"op":"app.event","args":{"type":"t","data":{"\\udc00":1}}}',
     "data keys must be strings without lone surrogates"),
    ('{"v":1,"op":"app.event","args":{"type":"t","data":NaN}}', "data numbers must be finite"),
    ({"v": 1, "op": "consumer.register", "args": {"name": "billing"}}, "consumer.register takes args {'name', "
                                                                        "'thread_id'}"),
    ({"v": 1, "op": "consumer.register", "args": {"name": "-x", "thread_id": "thread_1"}}, "name must be 1 to 55"),
    ({"v": 1, "op": "consumer.register", "args": {"name": "n" * 56, "thread_id": "thread_1"}},
     "name must be 1 to 55"),
    ({"v": 1, "op": "consumer.register", "args": {"name": "b", "thread_id": "thread 1"}},
     "thread_id must be a thread id"),
    ({"v": 1, "op": "consumer.unregister", "session_id": "s", "args": {"name": "b"}},
     "consumer.unregister takes no session_id"),
    ({"v": 1, "op": "consumer.unregister", "args": {"name": "b", "thread_id": "thread_1"}},
     "consumer.unregister takes args {'name'}"),
])
def test_hostile_bodies_are_rejected_with_the_verdict_on_the_message(body, reason):
    support = Support.objects.create()
    event_id = raw(support, body)
    with pytest.raises(Rejected) as info:
        parse(body if isinstance(body, str) else json.dumps(body))
    assert str(info.value).startswith(reason)
    Processor().run_once()
    record = PublishedEvent.objects.get(event_id=event_id)
    assert (record.status, record.reason) == ("rejected", str(info.value))
    [message] = messages(support)
    assert dict(message.metadata) == {"betaassi_event": "", "betaassi_status": "rejected",
                                      "betaassi_reason": str(info.value)}


def test_verdicts_of_noops_and_rejections_are_written_and_replay_the_same(backend, alice):
    support = Support.objects.create()
    gone = support.sessions.delete("never")
    bad = raw(support, "x" * (MAX_BODY_LENGTH + 1))
    made = support.sessions.create("s1", owner=alice)
    again = raw(support, Event("session.create", "s1", {"owner": alice.pk}).to_json())
    tier = support.queue.set_attr("tier", 5)
    raw(support, {"v": 1, "op": "assistant.set", "args": {"field": "tier", "value": "high"}})
    Processor().run_once()
    verdicts = {m.id: dict(m.metadata) for m in messages(support)}
    assert verdicts[gone] == {"betaassi_event": "session.delete", "betaassi_status": "noop",
                              "betaassi_reason": "no such session"}
    assert verdicts[bad] == {"betaassi_event": "", "betaassi_status": "rejected",
                             "betaassi_reason": f"longer than {MAX_BODY_LENGTH} characters"}
    assert verdicts[made] == {"betaassi_event": "session.create"}
    assert verdicts[again] == {"betaassi_event": "session.create", "betaassi_status": "noop",
                               "betaassi_reason": "the session exists"}
    assert verdicts[tier] == {"betaassi_event": "assistant.set"}
    last = list(verdicts)[-1]
    assert verdicts[last]["betaassi_status"] == "rejected"
    assert verdicts[last]["betaassi_reason"] == PublishedEvent.objects.get(event_id=last).reason
    assert verdicts[last]["betaassi_reason"].startswith("tier: ")



def test_a_verdict_forged_by_the_publisher_is_replaced_by_the_processors(backend, alice):
    """Only the processor writes verdicts: an event that arrives carrying one has it removed (applied) or
    overwritten (noop), so no follower or consumer reads a forged outcome."""
    support = Support.objects.create()
    publish_id = support.metadata[PUBLISH_KEY]
    create = Event("session.create", "s1", {"owner": alice.pk}).to_json()
    forged = {"betaassi_event": "session.create", "betaassi_status": "rejected", "betaassi_reason": "forged"}
    api = get_client()
    applied = api.beta.threads.messages.create(publish_id, role="user", content=create, metadata=forged).id
    again = api.beta.threads.messages.create(publish_id, role="user", content=create,
                                             metadata={**forged, "betaassi_status": "applied"}).id
    app = api.beta.threads.messages.create(publish_id, role="user", metadata={"betaassi_reason": "x"},
                                           content=Event("app.event", None, {"type": "t", "data": 1}).to_json()).id
    Processor().run_once()
    verdicts = {m.id: dict(m.metadata) for m in messages(support)}
    assert verdicts == {applied: {"betaassi_event": "session.create"},
                        again: {"betaassi_event": "session.create", "betaassi_status": "noop",
                                "betaassi_reason": "the session exists"},
                        app: {"betaassi_event": "app.event"}}
    assert support.sessions.get("s1").owner_id == alice.pk


@pytest.mark.parametrize("backend", ["remote"], indirect=True)
def test_the_documented_curl_publishes_an_event_with_a_key_limited_to_the_assistant(backend, daphne_server):
    """docs/api.md, "Publishing an event from any language": its shell lines, run as written with curl and jq."""
    support = Support.objects.create()
    key = daphne_server.manage("create_api_key", "orders", "--assistant", support.id).strip().splitlines()[-1]
    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    section = page.split("## Publishing an event from any language", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert script.startswith("KEY=sk-betaassi-...  BASE=http://127.0.0.1:8000/v1  ASSISTANT=asst_...\n")
    script = script.split("\n", 1)[1]
    env = {"PATH": os.environ["PATH"], "KEY": key, "BASE": daphne_server.base_url, "ASSISTANT": support.id}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    event_id = done.stdout.strip()
    [message] = messages(support)
    assert message.id == event_id
    assert json.loads(text_of(message)) == {"v": 1, "op": "app.event", "session_id": None, "args": {
        "type": "order.created", "data": {"order": 41, "total": "19.90"}}}
    Processor().run_once()  # (or the server's own processor did)
    root = get_client().beta.threads.retrieve(support.metadata["betaassi_registry"]).metadata
    assert root["hwm"] == event_id
    assert dict(get_client().beta.threads.messages.retrieve(event_id, thread_id=support.metadata[PUBLISH_KEY])
                .metadata) == {"betaassi_event": "app.event"}  # processed, no verdict: passed
