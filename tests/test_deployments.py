"""Two deployments of the app, each with its own database, sharing one backend.

The host serves the embedded API under daphne (deployment "host", its own database); this test process is a
client project (deployment "shop", the test database) whose backend is that API, with an API key. Each runs
``process_publish_queue``. Sessions and application events go to an assistant each deployment owns, from both:
every event is applied once, by its owner's processor; the other deployment follows the queue, so both event
logs, both ``Session`` mirrors and ``wait=True`` agree everywhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import redis
from channels.layers import channel_layers
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from betaassi_django.checks.config import check_deployment_name
from betaassi_django.client import get_client
from betaassi_django.metadata import OWNER_KEY
from betaassi_django.models import PublishedEvent, Session
from betaassi_django.publishing import directory, notify
from betaassi_django.publishing.backend import PUBLISH_KEY, REGISTRY_KEY
from betaassi_django.testing import LiveServer, scratch_database_url
from project.settings import redis_channel_layers
from tests.conftest import _database_url, shared_database_url
from tests.redis_server import RedisServer
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)

#: The same user id in both databases: a session's owner is checked where its assistant's queue is applied.
OWNER = 4242
APPLIED = re.compile(r"betaassi_django\.publishing event=(\S+) assistant=(\S+) op=\S+ session=\S+ status=(\S+)")
FOLLOWED = re.compile(r"followed event=(\S+) assistant=(\S+) op=\S+ session=\S+ status=(\S+)")


@pytest.fixture(scope="module")
def host():
    """The host deployment: daphne with the embedded API on a database of its own; no in-server processor."""
    # Events another deployment publishes reach a processor at its sweep (no wake-up or hint crosses projects).
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "BETAASSI_DEPLOYMENT": "host",
           "BETAASSI_IN_SERVER_PROCESSOR": "false", "LOG_LEVEL": "INFO", "BETAASSI_PUBLISH_SWEEP_SECONDS": "0.5"}
    with (scratch_database_url(_database_url()) as url,
          LiveServer(url, env=env, cwd=django_settings.BASE_DIR) as server):
        server.manage("migrate", "--run-syncdb", "--noinput", "-v", "0")  # the test app has no migrations
        yield server


@pytest.fixture
def shop(host, settings):
    """This process as the client deployment: the remote backend is the host's API."""
    settings.BETAASSI_BACKEND = "remote"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = host.base_url, host.api_key
    settings.BETAASSI_DEPLOYMENT = "shop"
    return {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
            "BETAASSI_BACKEND": "remote", "OPENAI_BASE_URL": host.base_url, "OPENAI_API_KEY": host.api_key,
            "BETAASSI_DEPLOYMENT": "shop", "LOG_LEVEL": "INFO", "BETAASSI_PUBLISH_SWEEP_SECONDS": "0.5"}


def _processor(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "process_publish_queue", "--interval", "0.2"],
                            cwd=django_settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def _on_host(host: LiveServer, code: str) -> dict:
    """Python run as the host deployment (``manage.py shell``): the JSON its last line prints."""
    return json.loads(host.manage("shell", "-c", code).strip().splitlines()[-1])


def _new_host_assistant(host: LiveServer) -> str:
    """An assistant the host owns (and the shared user), made as the host: its id."""
    return _on_host(host, f"""
import json
from django.contrib.auth import get_user_model
from tests.testapp.models import Support
get_user_model().objects.get_or_create(id={OWNER}, defaults={{"username": "alice"}})
print(json.dumps(Support.objects.create(name="host desk").id))""")


def _until(check, what: str, timeout: float = 60) -> None:
    """Wait for something another process does (a readiness wait, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)


def _followed_by(assistant_id: str, deployment: str) -> bool:
    publish_id = get_client().beta.assistants.retrieve(assistant_id).metadata[PUBLISH_KEY]
    return f"betaassi.mirror.{deployment}" in directory.read(get_client(), publish_id)


def _caught_up(assistant: Support, deployment: str) -> bool:
    """The deployment's follower committed the owner's high water mark (it recorded everything applied)."""
    api = get_client()
    position = directory.read(api, assistant.metadata[PUBLISH_KEY])[f"betaassi.mirror.{deployment}"]
    return (api.beta.threads.retrieve(position).metadata["hwm"]
            == api.beta.threads.retrieve(assistant.metadata[REGISTRY_KEY]).metadata["hwm"])


HOST_ACTS = """
import json
from betaassi_django.models import PublishedEvent
from tests.testapp.models import Support
theirs, ours = Support.retrieve({theirs!r}), Support.retrieve({ours!r})
ids = {{"h1": theirs.sessions.create("h1", owner={owner}, wait=True, timeout=60),
        "h2": ours.sessions.create("h2", owner={owner}, model="m-1", wait=True, timeout=60),
        "host-app-theirs": theirs.publish("order.created", {{"n": 1}}, wait=True, timeout=60),
        "host-app-ours": ours.publish("order.created", {{"n": 2}}, wait=True, timeout=60)}}
print(json.dumps({{k: [v, PublishedEvent.objects.get(event_id=v).status] for k, v in ids.items()}}))
"""

HOST_STATE = """
import json
from betaassi_django.models import PublishedEvent, Session
ids = {ids!r}
events = PublishedEvent.objects.filter(assistant_id__in=ids).values_list("event_id", "status")
print(json.dumps({{"events": dict(events),
                  "sessions": sorted(Session.objects.filter(assistant_id__in=ids).values_list(
                      "assistant_id", "session_id", "owner_id", "model", "revision"))}}))
"""


def test_two_deployments_apply_each_event_once_and_both_mirrors_follow(host, shop):
    get_user_model().objects.create_user("alice", id=OWNER)
    theirs_id = _new_host_assistant(host)
    host_processor, shop_processor = _processor(host.env), _processor(shop)
    try:
        ours = Support.objects.create(name="shop desk")
        theirs = Support.retrieve(theirs_id)
        assert (ours.metadata[OWNER_KEY], theirs.metadata[OWNER_KEY]) == ("shop", "host")
        _until(lambda: _followed_by(ours.id, "host") and _followed_by(theirs.id, "shop"), "both followers")

        host_ids = _on_host(host, HOST_ACTS.format(theirs=theirs.id, ours=ours.id, owner=OWNER))
        shop_ids = {"s1": theirs.sessions.create("s1", owner=OWNER, wait=True, timeout=60),
                    "s2": ours.sessions.create("s2", owner=OWNER, wait=True, timeout=60),
                    "s1-update": theirs.sessions.update("s1", model="m-2", wait=True, timeout=60),
                    "h2-update": ours.sessions.update("h2", model="m-3", wait=True, timeout=60),
                    "h1-delete": theirs.sessions.delete("h1", wait=True, timeout=60),
                    "shop-app-theirs": theirs.publish("order.shipped", [1, 2], wait=True, timeout=60),
                    "shop-app-ours": ours.publish("order.shipped", None, wait=True, timeout=60),
                    "tier": theirs.queue.set_attr("tier", 7, wait=True, timeout=60)}
        _until(lambda: _caught_up(ours, "host") and _caught_up(theirs, "shop"), "both followers catching up")
    finally:
        host_log, shop_log = _stop(host_processor), _stop(shop_processor)

    # wait=True returned in both deployments, with the owner's verdict.
    assert {k: status for k, (_, status) in host_ids.items()} == {
        "h1": "applied", "h2": "applied", "host-app-theirs": "passed", "host-app-ours": "passed"}
    shop_statuses = dict(PublishedEvent.objects.filter(event_id__in=shop_ids.values()).values_list("event_id",
                                                                                                     "status"))
    assert {k: shop_statuses[v] for k, v in shop_ids.items()} == {
        "s1": "applied", "s2": "applied", "s1-update": "applied", "h2-update": "applied", "h1-delete": "applied",
        "shop-app-theirs": "passed", "shop-app-ours": "passed", "tier": "applied"}
    assert Support.objects.get(pk=theirs.id).tier == 7  # the host applied it; the shop's row was re-read

    # Each event applied once, by its owner's processor; followed once by the other deployment.
    applied = {"host": APPLIED.findall(host_log), "shop": APPLIED.findall(shop_log)}
    followed = {"host": FOLLOWED.findall(host_log), "shop": FOLLOWED.findall(shop_log)}
    assert {a for _, a, _ in applied["host"]} == {theirs.id} and {a for _, a, _ in applied["shop"]} == {ours.id}
    for deployment, other in (("host", "shop"), ("shop", "host")):
        ids = [event_id for event_id, _, _ in applied[deployment]]
        assert len(ids) == len(set(ids))
        assert sorted(followed[other]) == sorted(applied[deployment])

    # Both event logs agree, and hold every event of both queues.
    every = {event_id for event_id, _, _ in applied["host"] + applied["shop"]}
    assert {v for v, _ in host_ids.values()} | set(shop_ids.values()) <= every
    state = _on_host(host, HOST_STATE.format(ids=[theirs.id, ours.id]))
    local = dict(PublishedEvent.objects.filter(assistant_id__in=[theirs.id, ours.id]).values_list("event_id",
                                                                                                 "status"))
    expected = {event_id: status for event_id, _, status in applied["host"] + applied["shop"]}
    assert state["events"] == local == expected

    # The registry (revisions: each update applied once), and both Session mirrors equal to it.
    registry = sorted((a.id, s.session_id, s.owner_id, s.model, s.revision)
                      for a in (theirs, ours) for s in a.sessions.list())
    assert registry == sorted([(theirs.id, "s1", OWNER, "m-2", 1), (ours.id, "h2", OWNER, "m-3", 1),
                               (ours.id, "s2", OWNER, None, 0)])
    mirror = sorted(Session.objects.filter(assistant_id__in=[theirs.id, ours.id]).values_list(
        "assistant_id", "session_id", "owner_id", "model", "revision"))
    assert mirror == registry
    assert [tuple(row) for row in state["sessions"]] == registry


#: The shop's processor polls this rarely: what it records before the waits below end came through a wake-up.
SLOW_POLL = "120"


def _wake_members(server: RedisServer) -> int:
    """Channels in the publishers' wake group (channels-redis keeps a sorted set per group)."""
    client = redis.Redis(port=server.port)
    return sum(client.zcard(key) for key in client.scan_iter(f"*group:{notify.WAKE_GROUP}"))


def test_woken_by_a_publish_the_follower_polls_until_the_owner_applied_it(host, shop, settings):
    """The shop's --interval is 120 s: wait=True returns only because the publishes here wake the shop's processor
    through Redis and its follower then polls fast until the owner has applied them. A first run registers the
    follower (its own publish wakes it); a second, fresh process has only the wake-ups from here."""
    get_user_model().objects.create_user("alice", id=OWNER)
    theirs = Support.retrieve(_new_host_assistant(host))
    with RedisServer() as server:
        settings.CHANNEL_LAYERS = redis_channel_layers(server.url)
        channel_layers.backends.clear()
        shop_env = {**shop, "REDIS_URL": server.url, "BETAASSI_PUBLISH_SWEEP_SECONDS": SLOW_POLL}
        command = [sys.executable, "manage.py", "process_publish_queue", "--interval", SLOW_POLL]
        host_processor = _processor(host.env)
        shop_processor = None
        try:
            registering = subprocess.Popen(command, cwd=django_settings.BASE_DIR, env=shop_env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                _until(lambda: _followed_by(theirs.id, "shop"), "the shop's follower registering")
            finally:
                _stop(registering)
            shop_processor = subprocess.Popen(command, cwd=django_settings.BASE_DIR, env=shop_env,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _until(lambda: _wake_members(server) == 1, "the shop's processor joining the wake group")
            time.sleep(0.5)  # its first pass found nothing: it now waits for a wake-up (or 120 s)
            event_ids = [theirs.sessions.create(f"w{n}", owner=OWNER, wait=True, timeout=30) for n in range(3)]
        finally:
            shop_log = _stop(shop_processor) if shop_processor is not None else ""
            _stop(host_processor)
            channel_layers.backends.clear()
    # (the follower's own registration may come first, when the first run stopped before recording it)
    assert [(event_id, status) for event_id, _, status in FOLLOWED.findall(shop_log)][-3:] == [
        (event_id, "applied") for event_id in event_ids]


@pytest.mark.parametrize(("backend", "deployment", "ids"), [
    ("remote", "default", ["betaassi.W013"]), ("remote", "shop", []), ("embedded", "default", [])])
def test_w013_a_remote_backend_wants_a_deployment_name(settings, backend, deployment, ids):
    settings.BETAASSI_BACKEND, settings.BETAASSI_DEPLOYMENT = backend, deployment
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = "http://127.0.0.1:9/v1", "sk-none"
    found = check_deployment_name()
    assert [message.id for message in found] == ids
    if found:
        assert found[0].msg.startswith("BETAASSI_BACKEND is 'remote' but BETAASSI_DEPLOYMENT is left 'default'")
        assert "BETAASSI_DEPLOYMENT = 'shop'" in found[0].hint

