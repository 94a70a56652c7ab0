"""Publish-queue events: the contract format, and refusals with a reason for anything else."""

from __future__ import annotations

import json

import pytest

from betaassi_django.publishing.events import Event, Rejected, parse


def test_round_trip_of_the_contract_format():
    event = Event("session.create", "session-id1", {"owner": 7, "kind": "manyshots", "context_messages": 3})
    body = json.loads(event.to_json())
    assert body == {"v": 1, "op": "session.create", "session_id": "session-id1",
                    "args": {"owner": 7, "kind": "manyshots", "context_messages": 3}}
    assert parse(event.to_json()) == event
    assert parse('{"v":1,"op":"session.delete","session_id":"a"}') == Event("session.delete", "a", {})
    assert parse('{"v":1,"op":"assistant.set","session_id":null,"args":{"field":"tier","value":3}}') == Event(
        "assistant.set", None, {"field": "tier", "value": 3})
    assert parse('{"v":1,"op":"session.create","session_id":"b","args":{"owner":1}}').args["kind"] == "default"


def test_values_are_data_not_syntax():
    tricky = 'x", "op": "session.delete'
    event = Event("session.update", "s1", {"model": tricky[:100]})
    assert parse(event.to_json()).args["model"] == tricky


@pytest.mark.parametrize(("content", "reason"), [
    ("not json", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ('{"v":2,"op":"session.delete","session_id":"a"}', "unsupported version 2; expected 1"),
    ('{"v":1,"op":"session.explode","session_id":"a"}', "unknown op 'session.explode'"),
    ('{"v":1,"op":"session.delete","session_id":"a","extra":1}', "unknown key 'extra'"),
    ('{"v":1,"op":"session.delete","session_id":"a b"}', "session_id must be 1 to 60 characters"),
    ('{"v":1,"op":"session.delete","session_id":""}', "session_id must be 1 to 60 characters"),
    ('{"v":1,"op":"session.delete","session_id":"a","args":{"x":1}}', "session.delete takes no args"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{}}', "owner must be a user id"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{"owner":true}}', "owner must be a user id"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{"owner":1,"kind":"weird"}}', "kind must be one of"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{"owner":1,"kind":"manyshots"}}',
     "context_messages (N >= 1) is required"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{"owner":1,"kind":"manyshots","context_messages":0}}',
     "context_messages must be an integer from 1"),
    ('{"v":1,"op":"session.create","session_id":"a","args":{"owner":1,"context_messages":2}}',
     "context_messages applies only to kind 'manyshots'"),
    ('{"v":1,"op":"session.update","session_id":"a","args":{"owner":2}}', "unknown argument 'owner'"),
    ('{"v":1,"op":"session.update","session_id":"a","args":{"model":5}}', "model must be a model name"),
    ('{"v":1,"op":"assistant.set","args":{"field":"tier"}}', "assistant.set takes args"),
    ('{"v":1,"op":"session.update","session_id":"a","args":[]}', "args must be a JSON object"),
])
def test_bad_events_are_rejected_with_a_reason(content, reason):
    with pytest.raises(Rejected) as info:
        parse(content)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(("kind", "count", "kept", "refusal"), [
    ("default", None, None, None),
    ("oneshot", None, None, None),
    ("manyshots", 5, 5, None),
    ("manyshots", None, None, "context_messages (N >= 1) is required for kind 'manyshots'"),
    ("default", 5, None, "context_messages applies only to kind 'manyshots', not 'default'"),
    ("oneshot", 1, None, "context_messages applies only to kind 'manyshots', not 'oneshot'"),
])
def test_the_kinds_rule_has_one_home(kind, count, kept, refusal):
    """What forms keep of N and why N is refused: the rule the forms, the admin, the events and the fold call."""
    from betaassi_django.publishing import kinds

    assert kinds.kept_context(kind, count) == kept
    assert kinds.context_refusal(kind, count) == refusal
    assert kinds.BY_CODE[kinds.CODES[kind]] == kind
