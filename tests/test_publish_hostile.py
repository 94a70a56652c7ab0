"""Hostile publish-queue events: poison bodies and forged fields are rejected with a reason, the queue moves on.

Events are written raw to the publish thread through the SDK, as any API key holder can.
"""

from __future__ import annotations

import json

import openai
import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from betaassi_django.client import get_client
from betaassi_django.models import PublishedEvent, Session
from betaassi_django.publishing.apply import FOREIGN_THREAD
from betaassi_django.publishing.backend import PUBLISH_KEY, SESSION_ASSISTANT_KEY, SESSION_THREAD_KEY
from betaassi_django.publishing.events import Rejected, parse
from betaassi_django.publishing.processor import Processor
from tests.conftest import client_of
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


def raw(assistant, body: str) -> str:
    """Write one message to the assistant's publish thread, as any API key holder can; its id."""
    return get_client().beta.threads.messages.create(assistant.metadata[PUBLISH_KEY], role="user", content=body).id


def event(op: str, session_id: str | None, **args) -> str:
    return json.dumps({"v": 1, "op": op, "session_id": session_id, "args": args})


def outcome(event_id: str) -> tuple[str, str]:
    return PublishedEvent.objects.values_list("status", "reason").get(event_id=event_id)


POISON = [
    ("[" * 5000, "not valid JSON: nested too deep"),
    ('{"v":1,"op":"session.create","session_id":"p","args":{"owner":' + "1" + "0" * 4300 + "}}",
     "not valid JSON: a number too long"),
    ('{"v":1,"op":"session.create","session_id":"p","args":{"owner":"1"}}', "owner must be a user id"),
    ('{"v":true,"op":"session.delete","session_id":"p"}', "unsupported version True"),
    ('{"v":1,"op":["session.delete"],"session_id":"p"}', "unknown op ['session.delete']"),
    ('{"v":1,"op":"session.update","session_id":"p","args":{"kind":["default"]}}', "kind must be one of"),
    ('{"v":1,"op":"session.update","session_id":"p","args":{"model":"\\ud800"}}', "model must be a model name"),
    ('{"v":1,"op":"session.delete","session_id":"\\ud800"}', "session_id must be 1 to 60 characters"),
    ('{"v":1,"op":"session.create","session_id":"p","args":{"owner":1,"thread_id":"thread_x\\n"}}',
     "thread_id must be a thread id"),
    ('{"v":1,"op":"assistant.set","args":{"field":"tier","value":{"a":1}}}', "assistant.set value must be"),
    ("{" + '"a":' * 3000 + "1" + "}" * 3000, "not valid JSON"),
]


@pytest.mark.parametrize(("content", "reason"), POISON)
def test_parse_raises_only_rejected(content, reason):
    with pytest.raises(Rejected) as info:
        parse(content)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize("content", [None, 5, b"{}", ["x"], "x" * 40_000, '"' + "\\ud800" * 10 + '"'])
def test_parse_of_anything_is_an_event_or_rejected(content):
    with pytest.raises(Rejected):
        parse(content)


def test_poison_is_rejected_and_valid_events_of_every_assistant_are_applied(alice, staff):
    first, second = Support.objects.create(name="first"), Support.objects.create(name="second")
    before = first.sessions.create("before", owner=alice)
    poison = [(raw(first, content), reason) for content, reason in POISON]
    after = [first.sessions.create("after", owner=alice, model="m-1"), first.sessions.update("before", model="m-2"),
             second.sessions.create("other", owner=alice), first.queue.set_attr("tier", 3)]
    assert Processor().run_once() == 1 + len(POISON) + 4
    assert outcome(before) == ("applied", "")
    for event_id, reason in poison:
        status, recorded = outcome(event_id)
        assert status == "rejected" and recorded.startswith(reason), (event_id, recorded)
    assert [outcome(event_id)[0] for event_id in after] == ["applied"] * 4
    assert first.sessions.get("after").model == "m-1" and first.sessions.get("before").model == "m-2"
    assert second.sessions.get("other").owner == alice
    assert Support.retrieve(first.id).tier == 3

    web = client_of(staff)  # the admin reads the poisoned queue without a 500
    queue_url = reverse("admin:testapp_support_queue", args=[quote(first.pk)])
    for url in (reverse("admin:testapp_support_changelist"), queue_url,
                reverse("admin:testapp_support_change", args=[quote(first.pk)])):
        assert web.get(url).status_code == 200, url
    page = web.get(queue_url).content.decode()
    assert "not valid JSON: nested too deep" in page
    statuses = [e.op if not isinstance(e, Rejected) else "rejected" for _, e in first.queue.events()]
    assert statuses.count("rejected") == len(POISON)  # the readers get each as a Rejected too
    raw(first, "[" * 5000)  # pending poison: the pages still answer
    for url in (reverse("admin:testapp_support_changelist"), queue_url):
        assert web.get(url).status_code == 200, url


def test_a_no_op_create_naming_another_sessions_thread_does_not_delete_it(alice, bob):
    support = Support.objects.create()
    support.sessions.create("bobs", owner=bob)
    support.sessions.create("alices", owner=alice)
    Processor().run_once()
    bobs_thread = support.sessions.get("bobs").thread_id
    forged = raw(support, event("session.create", "alices", owner=alice.pk, thread_id=bobs_thread))
    Processor().run_once()
    assert outcome(forged) == ("rejected", FOREIGN_THREAD)
    assert get_client().beta.threads.retrieve(bobs_thread).id == bobs_thread  # still there
    assert support.sessions.get("bobs").thread_id == bobs_thread


def test_a_forged_session_on_another_users_thread_is_rejected(alice, bob):
    support, other = Support.objects.create(), Support.objects.create()
    support.sessions.create("bobs", owner=bob)
    Processor().run_once()
    bobs = support.sessions.get("bobs")
    bobs.ask("my secret")
    # The same thread named for a new session, and for the same session id on another assistant.
    forged = [raw(support, event("session.create", "mine", owner=alice.pk, thread_id=bobs.thread_id)),
              raw(other, event("session.create", "bobs", owner=alice.pk, thread_id=bobs.thread_id))]
    # A thread the forger made and tagged for another assistant's session of that id.
    tagged = get_client().beta.threads.create(metadata={SESSION_THREAD_KEY: "mine2", SESSION_ASSISTANT_KEY: other.id})
    forged.append(raw(support, event("session.create", "mine2", owner=alice.pk, thread_id=tagged.id)))
    Processor().run_once()
    assert [outcome(event_id) for event_id in forged] == [("rejected", FOREIGN_THREAD)] * 3
    assert support.sessions.get("mine") is None and other.sessions.get("bobs") is None
    assert not Session.objects.filter(owner=alice).exists()
    assert get_client().beta.threads.retrieve(bobs.thread_id).id == bobs.thread_id
    assert get_client().beta.threads.retrieve(tagged.id).id == tagged.id  # not ours to delete either


def test_a_session_thread_is_deleted_only_when_tagged_for_it(alice):
    support = Support.objects.create()
    support.sessions.create("s", owner=alice)
    duplicate = support.sessions.create("s", owner=alice)  # a no-op: the publisher's new thread is let go of
    thread_of_duplicate = json.loads(get_client().beta.threads.messages.retrieve(
        duplicate, thread_id=support.metadata[PUBLISH_KEY]).content[0].text.value)["args"]["thread_id"]
    Processor().run_once()
    assert outcome(duplicate) == ("noop", "the session exists")
    with pytest.raises(openai.NotFoundError):
        get_client().beta.threads.retrieve(thread_of_duplicate)
    thread_id = support.sessions.get("s").thread_id
    support.sessions.delete("s")
    Processor().run_once()
    with pytest.raises(openai.NotFoundError):
        get_client().beta.threads.retrieve(thread_id)


def test_assistant_set_changes_only_the_classs_own_metadata_fields(alice):
    victim = Support.objects.create(name="victim", tier=1)
    support = Support.objects.create(name="mine", tier=1)
    cases = [
        (event("assistant.set", None, field="id", value=victim.id), "Support has no metadata field 'id'"),
        (event("assistant.set", None, field="name", value="renamed"), "Support has no metadata field 'name'"),
        (event("assistant.set", None, field="metadata", value="x"), "Support has no metadata field 'metadata'"),
        (event("assistant.set", None, field="tier", value="many"), "tier: "),
        (event("assistant.set", None, field="escalate", value="maybe"), "escalate: "),
        (event("assistant.set", None, field="tier", value=2**70), "assistant.set value must be"),
    ]
    ids = [(raw(support, body), reason) for body, reason in cases]
    good = support.queue.set_attr("escalate", True)
    Processor().run_once()
    for event_id, reason in ids:
        status, recorded = outcome(event_id)
        assert status == "rejected" and recorded.startswith(reason), recorded
    assert outcome(good) == ("applied", "")
    mine, other = Support.retrieve(support.id), Support.retrieve(victim.id)
    assert (mine.name, mine.tier, mine.escalate) == ("mine", 1, True)
    assert (other.name, other.tier, other.escalate) == ("victim", 1, False)


def test_owners_must_be_existing_users(alice):
    support = Support.objects.create()
    huge = raw(support, '{"v":1,"op":"session.create","session_id":"h","args":{"owner":1' + "0" * 4300 + "}}")
    big = raw(support, event("session.create", "b", owner=2**63))
    absent = raw(support, event("session.create", "a", owner=alice.pk + 1000))
    in_range = raw(support, event("session.create", "r", owner=2**40))  # beyond the user table's int4 on PostgreSQL
    fine = raw(support, event("session.create", "ok", owner=alice.pk))
    Processor().run_once()
    assert outcome(huge) == ("rejected", "not valid JSON: a number too long")
    assert outcome(big) == ("rejected", "owner must be a user id (a positive integer)")
    assert outcome(absent) == ("rejected", f"owner {alice.pk + 1000} is not a user")
    assert outcome(in_range) == ("rejected", f"owner {2**40} is not a user")
    assert outcome(fine) == ("applied", "")
    assert [s.session_id for s in support.sessions.list()] == ["ok"]


def test_a_session_id_with_a_final_newline_is_rejected(alice):
    support = Support.objects.create()
    forged = raw(support, event("session.create", "nl\n", owner=alice.pk))
    Processor().run_once()
    assert outcome(forged)[0] == "rejected" and outcome(forged)[1].startswith("session_id must be")
    assert not Session.objects.exists()
    assert client_of(alice).get(reverse("betaassi:sessions")).status_code == 200
    # A mirror row an earlier version wrote for such an id: the page leaves it out instead of failing.
    Session.objects.create(assistant_id=support.id, session_id="nl\n", owner=alice, created_at=timezone.now())
    Session.objects.create(assistant_id=support.id, session_id="fine", owner=alice, created_at=timezone.now())
    page = client_of(alice).get(reverse("betaassi:sessions"))
    assert page.status_code == 200 and reverse("betaassi:chat", args=[support.id, "fine"]) in page.content.decode()
    with pytest.raises(Exception) as info:
        support.sessions.create("nl\n", owner=alice)
    assert "session_id" in str(info.value)
