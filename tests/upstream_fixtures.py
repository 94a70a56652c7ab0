"""Fixtures of the tests that point the ``openai`` responder at the fake upstream (``tests/fake_upstream.py``),
shared through ``pytest_plugins`` in conftest; a test module's own fixture of the same name wins."""

from __future__ import annotations

import pytest

from tests.fake_upstream import FakeUpstream


@pytest.fixture
def fake():
    """The fake upstream; a test ends failing if the product sent it anything off the specification."""
    with FakeUpstream() as upstream:
        yield upstream
    assert upstream.violations == []


@pytest.fixture(params=["responses", "chat"])
def api(request, settings, fake) -> str:
    """The embedded API with the openai responder pointed at the fake, through each upstream API."""
    settings.BETAASSI_RESPONDER = "openai"
    settings.BETAASSI_UPSTREAM_API = request.param
    settings.BETAASSI_UPSTREAM_BASE_URL = fake.base_url
    settings.BETAASSI_UPSTREAM_API_KEY = "sk-upstream-test"
    settings.BETAASSI_UPSTREAM_MAX_RETRIES = 2
    settings.BETAASSI_UPSTREAM_TIMEOUT = 5.0
    return request.param
