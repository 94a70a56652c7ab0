"""The metadata codec: exact round trips through the backend, and refusals before any request."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from betaassi_django import metadata as codec
from betaassi_django.client import get_client
from tests.testapp.models import Kitchen

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
RECORDS = st.lists(st.fixed_dictionaries({"id": st.integers(0, 10**6), "name": TEXT.filter(lambda t: len(t) < 30),
                                          "done": st.booleans()}), max_size=20)
VALID = {
    "text": st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=1500),
    "short": st.none() | TEXT.filter(lambda t: len(t) <= 20),
    "count": st.none() | st.integers(-(2**63), 2**63 - 1),
    "flag": st.none() | st.booleans(),
    "ratio": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    "price": st.none() | st.decimals(min_value=decimal.Decimal("-99999999.9999"),
                                     max_value=decimal.Decimal("99999999.9999"), places=4),
    "day": st.none() | st.dates(),
    "moment": st.none() | st.datetimes(timezones=st.timezones()),
    "span": st.none() | st.timedeltas(min_value=datetime.timedelta(days=-10**6),
                                      max_value=datetime.timedelta(days=10**6)),
    "token": st.none() | st.uuids(),
    "data": st.none() | JSON | RECORDS,
    "color": st.sampled_from(["red", "green"]),
}
FIXTURES_OK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                               HealthCheck.too_slow])


@FIXTURES_OK
@given(values=st.fixed_dictionaries(VALID))
def test_every_type_round_trips_exactly(backend, values):
    kitchen = Kitchen(**values)
    kitchen.save()
    retrieved = Kitchen.retrieve(kitchen.id)
    for name, value in values.items():
        got = getattr(retrieved, name)
        assert _same(got, value) and type(got) is type(value), (name, value, got)
    # Loaded from the mirror, values are decoded from the backend's strings: exact on every database.
    mirror = Kitchen.objects.get(pk=kitchen.id)
    for name, value in values.items():
        got = getattr(mirror, name)
        assert _same(got, value) and type(got) is type(value), (name, value, got)

    stored = get_client().beta.assistants.retrieve(kitchen.id).metadata
    assert stored["betaassi_type"] == "testapp.Kitchen"
    assert all(isinstance(v, str) and len(v) <= 512 for v in stored.values())
    assert len(stored) <= 16


def _same(got, value) -> bool:
    """Equal; datetimes as instants (Python never calls an ambiguous wall time of another zone equal)."""
    if isinstance(value, datetime.datetime):
        return got.astimezone(datetime.UTC) == value.astimezone(datetime.UTC)
    return got == value


INVALID = {
    "short": TEXT.filter(lambda t: len(t) > 20),
    "count": st.one_of(st.integers(max_value=-(2**63) - 1), st.integers(min_value=2**63),
                       st.text(st.sampled_from("xyz "), min_size=1)),
    "ratio": st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    "price": st.decimals(min_value=decimal.Decimal("100000000"), max_value=decimal.Decimal("10") ** 20, places=0),
    "day": st.text(st.sampled_from("abc-"), min_size=1),
    "moment": st.datetimes(),  # naive: refused, metadata keeps instants
    "token": st.text(st.sampled_from("ghij"), min_size=1),
    "data": st.sets(st.integers(), min_size=1),
    "color": TEXT.filter(lambda t: t not in ("red", "green", "")),
    "text": st.sampled_from(["nul\x00inside", "x" * (512 * 16)]),
}


@FIXTURES_OK
@given(data=st.data())
def test_invalid_values_are_refused_before_any_request(backend, data):
    name = data.draw(st.sampled_from(sorted(INVALID)))
    value = data.draw(INVALID[name])
    backend.reset()
    with pytest.raises(ValidationError) as info:
        Kitchen(**{name: value}).save()
    assert name in info.value.message_dict
    assert backend.requests == []


def test_chunk_and_owned_keys():
    field = Kitchen._meta.get_field("text")
    pairs = codec.encode_field(field, "a" * 1025)
    assert list(pairs) == ["text", "text.1", "text.2"] and pairs["text.2"] == "a"
    assert codec.encode_field(field, "") == {"text": ""}
    assert codec.decode_field(field, pairs) == "a" * 1025
    owned = codec.owned_keys({**pairs, "texture": "x", "text.x": "y", "betaassi_type": "t"}, ["text"])
    assert owned == {"text", "text.1", "text.2", "betaassi_type"}


@pytest.mark.parametrize(("name", "value", "stored"), [
    ("flag", True, "true"),
    ("count", -12, "-12"),
    ("ratio", 0.1, "0.1"),
    ("price", decimal.Decimal("1.5000"), "1.5000"),
    ("day", datetime.date(2026, 11, 25), "2026-11-25"),
    ("moment", datetime.datetime(2026, 11, 25, 13, 45, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
     "2026-11-25T11:45:00.000000+00:00"),
    ("span", datetime.timedelta(minutes=1, microseconds=5), "60000005"),
    ("token", uuid.UUID(int=255), "00000000-0000-0000-0000-0000000000ff"),
    ("data", [{"id": 1, "name": "é"}], '[{"id":1,"name":"é"}]'),
])
def test_documented_encodings(name, value, stored):
    """Other processes and languages read these strings: the format is part of the contract."""
    field = Kitchen._meta.get_field(name)
    assert codec.encode_field(field, value) == {name: stored}
    assert codec.decode_field(field, {name: stored}) == value


def test_encode_works_out_the_kept_keys_once(monkeypatch):
    """The foreign keys of ``keep`` are found with one pass over it, not one per key (issue 16: a save's cost)."""
    calls = []
    real = codec.owned_keys
    monkeypatch.setattr(codec, "owned_keys", lambda *args: calls.append(1) or real(*args))
    keep = {"other.a": "1", "other.b": "2", "text": "old", codec.TYPE_KEY: "testapp.Kitchen"}
    fields = [Kitchen._meta.get_field("text")]
    encoded = codec.encode(fields, Kitchen(text="new"), "testapp.Kitchen", keep=keep)
    assert encoded == {"other.a": "1", "other.b": "2", "text": "new", codec.TYPE_KEY: "testapp.Kitchen"}
    assert len(calls) == 1
