"""Function tools of an assistant class, executed by the app in session.ask, session.astream and WebSocket turns.

The model is the fake upstream (``tests/fake_upstream.py``); the assistant, its
sessions and runs go through the embedded API and the openai responder.
"""

from __future__ import annotations

import asyncio
import enum
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from betaassi_django.client import get_client
from betaassi_django.models import BaseAssistant
from betaassi_django.publishing.processor import Processor
from betaassi_django.tools import openai_function
from tests.fake_upstream import Calls, FakeUpstream, Text
from tests.testapp.models import Support

pytestmark = pytest.mark.django_db(transaction=True)


class Unit(enum.Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


@openai_function
def get_weather(city: str, unit: Unit = Unit.celsius) -> dict:
    """The current weather in a city.

    Args:
        city: The city's name.
        unit: The temperature unit.
    """
    return {"city": city, "temperature": 21 if unit is Unit.celsius else 70, "unit": unit.value}


@openai_function
async def get_time(city: str) -> str:
    """The local time in a city."""
    await asyncio.sleep(0)
    return f"09:30 in {city}"


@openai_function
def open_ticket(summary: str) -> str:
    """Open a support ticket."""
    raise RuntimeError("the ticket system is down")


@openai_function
async def slow_lookup(query: str) -> str:
    """Look something up slowly."""
    await asyncio.sleep(5)
    return "too late"


class WeatherDeskBase(BaseAssistant):
    """Declared as a developer would; abstract, so that no model joins the app registry for the other tests."""

    function_tools = [get_weather, get_time, open_ticket, slow_lookup]

    class Meta:
        abstract = True
        app_label = "testapp"


def test_function_tools_are_checked_when_the_class_is_declared():
    assert list(WeatherDeskBase.function_tools_by_name()) == ["get_weather", "get_time", "open_ticket", "slow_lookup"]
    with pytest.raises(TypeError, match="annotate parameter 'city'"):
        class Broken(BaseAssistant):
            function_tools = [openai_function(name="bad")(lambda city: city)]

            class Meta:
                abstract = True
                app_label = "testapp"


@pytest.fixture
def fake(settings):
    with FakeUpstream() as upstream:
        settings.BETAASSI_RESPONDER = "openai"
        settings.BETAASSI_UPSTREAM_API = "responses"
        settings.BETAASSI_UPSTREAM_BASE_URL = upstream.base_url
        settings.BETAASSI_UPSTREAM_MAX_RETRIES = 0
        yield upstream
    assert upstream.violations == []


@pytest.fixture
def desk(alice, fake, monkeypatch):
    """The test app's Support assistant with the weather functions (as if declared on its class)."""
    monkeypatch.setattr(Support, "function_tools", WeatherDeskBase.function_tools)
    monkeypatch.setattr(Support, "_declared_doc", "You answer weather questions with your tools.")
    desk = Support.objects.create(model="gpt-test")
    desk.sessions.create("chat", owner=alice)
    Processor().run_once()
    return desk


def _outputs(body: dict) -> dict[str, str]:
    """Function name -> output, from a Responses request that carries function calls and their outputs."""
    names = {item["call_id"]: item["name"] for item in body["input"] if item.get("type") == "function_call"}
    return {names[item["call_id"]]: item["output"] for item in body["input"]
            if item.get("type") == "function_call_output"}


def test_the_class_tools_go_to_the_backend_and_upstream(desk, fake):
    backend = get_client().beta.assistants.retrieve(desk.id)
    assert [t.model_dump(exclude_none=True) for t in backend.tools] == [
        get_weather.schema, get_time.schema, open_ticket.schema, slow_lookup.schema]
    assert backend.metadata["betaassi_type"] == "testapp.Support"
    assert Support.retrieve(desk.id).tools == [get_weather.schema, get_time.schema, open_ticket.schema,
                                                   slow_lookup.schema]
    desk.name = "renamed"
    desk.save()  # saving again keeps one definition per function
    assert len(get_client().beta.assistants.retrieve(desk.id).tools) == 4

    fake.script(Text(["Hi."]))
    assert desk.sessions.get("chat").ask("hello") == "Hi."
    sent = fake.requests[0].body
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time", "open_ticket", "slow_lookup"]
    assert sent["tools"][0]["parameters"] == get_weather.parameters
    assert sent["instructions"] == "You answer weather questions with your tools."


def test_ask_executes_the_functions_with_errors_reported_to_the_model(desk, fake, settings):
    settings.BETAASSI_TOOL_TIMEOUT = 0.2
    fake.script(Calls([("get_weather", '{"city": "Oslo", "unit": "fahrenheit"}'),
                       ("open_ticket", '{"summary": "x"}'), ("launch_rocket", "{}"),
                       ("slow_lookup", '{"query": "q"}'), ("get_weather", '{"town": "Oslo"}')]),
                Calls([("get_time", '{"city": "Oslo"}')], text=["One more. "]),
                Text(["Oslo: 70F ", "at 09:30."]))
    session = desk.sessions.get("chat")
    assert session.ask("Weather and time in Oslo?") == "One more. Oslo: 70F at 09:30."

    first_round = fake.requests[1].body["input"]
    outputs = [item["output"] for item in first_round if item.get("type") == "function_call_output"]
    assert json.loads(outputs[0]) == {"city": "Oslo", "temperature": 70, "unit": "fahrenheit"}
    assert json.loads(outputs[1]) == {"error": "RuntimeError: the ticket system is down"}
    assert json.loads(outputs[2]) == {"error": "unknown function 'launch_rocket'"}
    assert json.loads(outputs[3]) == {"error": "function 'slow_lookup' timed out after 0.2 s"}
    assert json.loads(outputs[4])["error"].startswith("invalid arguments for 'get_weather': ")
    assert _outputs(fake.requests[2].body)["get_time"] == "09:30 in Oslo"
    run = get_client().beta.threads.runs.list(session.thread_id, limit=1).data[0]
    assert run.status == "completed"


async def test_astream_streams_across_tool_rounds(desk, fake):
    fake.script(Calls([("get_weather", '{"city": "Rome"}'), ("get_time", '{"city": "Rome"}')]),
                Text(["Rome: ", "21C, ", "09:30."]))
    session = await sync_to_async(desk.sessions.get)("chat")
    deltas = [delta async for delta in session.astream("Rome?")]
    assert deltas == ["Rome: ", "21C, ", "09:30."]
    assert _outputs(fake.requests[1].body) == {
        "get_weather": '{"city":"Rome","temperature":21,"unit":"celsius"}', "get_time": "09:30 in Rome"}


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_a_websocket_turn_executes_the_functions(desk, fake, alice):
    from project.asgi import application

    fake.script(Calls([("get_weather", '{"city": "Lima"}')]), Text(["Lima ", "is ", "warm."]))
    headers = [(b"origin", b"http://127.0.0.1"), (b"cookie", await sync_to_async(_cookie)(alice))]
    communicator = WebsocketCommunicator(application, f"/ws/assistants/{desk.id}/sessions/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "session.ready"
    await communicator.send_json_to({"type": "user.message", "content": "Lima?"})
    frames = []
    while not frames or frames[-1]["type"] not in ("message.completed", "run.failed"):
        frames.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["message.created", "run.started"] and kinds[-1] == "message.completed"
    assert frames[0]["message"]["content"] == "Lima?"
    assert "".join(f["delta"] for f in frames if f["type"] == "message.delta") == "Lima is warm."
    assert frames[-1]["message"]["content"] == "Lima is warm."
    assert _outputs(fake.requests[1].body) == {"get_weather": '{"city":"Lima","temperature":21,"unit":"celsius"}'}
