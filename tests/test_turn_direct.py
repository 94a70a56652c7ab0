"""A turn on the embedded backend in this process creates its run without a request (``client.create_run_here``):
the same validation and store as ``POST /v1/threads/{id}/runs``; anything the API would refuse goes through the
SDK's request after all, so the turn raises the SDK's own error. A client whose transport is wrapped (recording,
counting) still sends its requests (``tests/test_turn_cost.py``)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from betaassi_django.assistants_api.transport import AsyncInProcessTransport, InProcessTransport
from betaassi_django.client import build_client, calls_store_directly, create_run_here, get_client
from betaassi_django.models import Session
from betaassi_django.publishing.processor import Processor
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def requests(settings, monkeypatch) -> list[str]:
    """The requests the in-process transports carry, the default clients unwrapped."""
    settings.BETAASSI_BACKEND = "embedded"
    sent: list[str] = []
    handle, handle_async = InProcessTransport.handle_request, AsyncInProcessTransport.handle_async_request

    def counted(transport, request):
        sent.append(f"{request.method} {request.url.path}")
        return handle(transport, request)

    async def counted_async(transport, request):
        sent.append(f"{request.method} {request.url.path}")
        return await handle_async(transport, request)

    monkeypatch.setattr(InProcessTransport, "handle_request", counted)
    monkeypatch.setattr(AsyncInProcessTransport, "handle_async_request", counted_async)
    return sent


def _session(alice) -> Session:
    Support.objects.create(name="support").sessions.create("s-1", owner=alice)
    Processor().run_once()
    return Session.objects.get(session_id="s-1")


def test_a_turn_creates_its_run_without_a_request(requests, alice):
    session = _session(alice)
    assert calls_store_directly(get_client())
    assert not calls_store_directly(build_client(wrap_transport=lambda inner: type("Wrapped", (InProcessTransport,),
                                                                                 {})()))
    requests.clear()
    assert session.ask("one") == "echo: one [context=1]"

    async def turn() -> str:
        return "".join([piece async for piece in session.astream("two")])

    assert asyncio.run(turn()) == "echo: two [context=3]"
    assert requests == []
    runs = get_client().beta.threads.runs.list(session.thread_id, order="asc").data
    assert [(r.status, r.assistant_id, r.truncation_strategy.type) for r in runs] == [
        ("completed", session.assistant_id, session.truncation_strategy()["type"])] * 2


def test_a_run_the_api_refuses_is_refused_by_the_sdk_as_ever(requests, alice):
    session = _session(alice)
    get_client().beta.threads.delete(session.thread_id)
    requests.clear()
    with pytest.raises(openai.NotFoundError, match=f"No thread found with id '{session.thread_id}'"):
        session.ask("one")
    assert requests == [f"POST /v1/threads/{session.thread_id}/runs"]  # the request says why
    body = {"assistant_id": session.assistant_id, "additional_messages": [{"role": "user", "content": "x"}]}
    assert create_run_here(session.thread_id, body) is None
    assert create_run_here(session.thread_id, {**body, "temperature": "hot"}) is None  # a 400: nothing stored
