"""The mirror row's write after a save (``models/mirror.py``, issue 16): one UPDATE written once per model, with
what Django's ``save()`` would write and the signals it sends; what it does not cover is left to ``save()``."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import F
from django.db.models.signals import post_save, pre_save
from django.test.utils import CaptureQueriesContext

from betaassi_django.client import use_clients
from betaassi_django.models.mirror import update_row
from betaassi_django.testing import counting_client
from tests.testapp.models import Kitchen, Support

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedded():
    client, calls = counting_client(backend="embedded")
    with use_clients(client):
        yield calls


@pytest.fixture
def signals():
    seen: list[tuple[str, bool | None]] = []

    def on_pre(sender, instance, **kwargs):
        seen.append(("pre", None))

    def on_post(sender, instance, created, **kwargs):
        seen.append(("post", created))

    pre_save.connect(on_pre, sender=Support, dispatch_uid="test-mirror-pre")
    post_save.connect(on_post, sender=Support, dispatch_uid="test-mirror-post")
    yield seen
    pre_save.disconnect(sender=Support, dispatch_uid="test-mirror-pre")
    post_save.disconnect(sender=Support, dispatch_uid="test-mirror-post")


def test_an_existing_rows_write_is_one_update_with_the_signals(embedded, signals):
    support = Support.objects.create(name="a", tier=1)
    signals.clear()
    support.tier, support.name = 7, "b"
    with CaptureQueriesContext(connection) as queries:
        assert update_row(support) is True
    assert [q["sql"].split()[0] for q in queries] == ["UPDATE"]
    assert signals == [("pre", None), ("post", False)]
    # the columns as written (a read decodes metadata-backed fields from the metadata, which was not changed here)
    assert Support.objects.filter(id=support.id).values_list("tier", "name", "metadata").get() == (
        7, "b", support.metadata)


def test_save_writes_the_mirror_with_one_statement(embedded):
    support = Support.objects.get(id=Support.objects.create(name="a", tier=1).id)
    support.tier = 3
    with CaptureQueriesContext(connection) as queries:
        support.save()
    mirror = [q["sql"] for q in queries if "testapp_support" in q["sql"]]
    assert len(mirror) == 1 and mirror[0].startswith("UPDATE"), mirror
    assert [method for method, _ in embedded][-1:] == ["POST"]
    stored = Support.objects.get(id=support.id)
    assert (stored.tier, stored.metadata["tier"], stored.synced_at) == (3, "3", support.synced_at)


def test_a_row_that_is_gone_is_inserted_again(embedded, signals):
    support = Support.objects.create(name="a", tier=1)
    Support.objects.get(id=support.id).forget()  # the mirror row only
    signals.clear()
    assert update_row(support) is True
    assert signals == [("pre", None), ("post", True)]
    assert Support.objects.get(id=support.id).name == "a"


def test_what_it_does_not_cover_is_left_to_save(embedded):
    support = Support.objects.create(name="a", tier=1)
    assert update_row(Support(id=support.id)) is False  # never read from the database
    assert update_row(Support.objects.defer("escalate").get(id=support.id)) is False  # deferred fields
    kitchen = Kitchen.objects.create()
    kitchen.count = F("count")
    assert update_row(kitchen) is False
