"""System checks refuse, at start-up, models whose fields cannot live in metadata."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings
from django.core import checks
from django.db import models
from django.test.utils import isolate_apps

from betaassi_django.checks import check_metadata_fields, check_model
from betaassi_django.models import BaseAssistant, BaseThread


def _ids(model) -> list[str]:
    return [message.id for message in check_model(model)]


@isolate_apps("tests.testapp")
def test_too_many_fields():
    fields = {f"f{i}": models.IntegerField(default=0) for i in range(16)}
    model = type("Crowded", (BaseThread,), {"__module__": "tests.testapp.models", **fields})
    assert _ids(model) == ["betaassi.E001"]
    assert "16 metadata fields; at most 15 fit" in check_model(model)[0].msg
    fifteen = type("Full", (BaseThread,), {"__module__": "tests.testapp.models",
                                           **{f"f{i}": models.IntegerField(default=0) for i in range(15)}})
    assert _ids(fifteen) == []


@isolate_apps("tests.testapp")
def test_unsupported_type_name_and_length():
    model = type("Odd", (BaseAssistant,), {
        "__module__": "tests.testapp.models",
        "owner": models.ForeignKey("auth.User", on_delete=models.CASCADE),
        "picture": models.FileField(),
        "n" * 62: models.IntegerField(default=0),
        "betaassi_type": models.CharField(max_length=10, default=""),
        "essay": models.CharField(max_length=512 * 12 + 1, default=""),
    })
    messages = check_model(model)
    by_field = {(m.obj.name, m.id) for m in messages}
    assert ("owner", "betaassi.E002") in by_field and ("picture", "betaassi.E002") in by_field
    assert ("n" * 62, "betaassi.E003") in by_field and ("betaassi_type", "betaassi.E006") in by_field
    assert ("betaassi_type", "betaassi.E003") not in by_field  # one error, one id
    assert ("essay", "betaassi.E004") in by_field
    essay = next(m for m in messages if m.obj.name == "essay")
    assert "needs up to 13 metadata keys" in essay.msg and "only 8 are free" in essay.msg  # 4 keys reserved


@isolate_apps("tests.testapp")
def test_overflow_at_max_length_is_a_warning():
    model = type("Wordy", (BaseThread,), {"__module__": "tests.testapp.models",
                                          **{f"p{i}": models.CharField(max_length=2048, default="") for i in range(4)}})
    assert _ids(model) == ["betaassi.W001"]


@isolate_apps("tests.testapp")
def test_a_proxy_model_is_refused():
    from tests.testapp.models import Support

    model = type("VipSupport", (Support,), {"__module__": "tests.testapp.models",
                                            "Meta": type("Meta", (), {"proxy": True})})
    [error] = check_model(model)
    assert error.id == "betaassi.E005"
    assert error.msg == "testapp.VipSupport is a proxy model; a backend entity model needs a table of its own."
    assert error.hint.startswith("Subclass Support without proxy = True")


def test_the_check_is_registered_and_the_test_models_pass():
    assert check_metadata_fields in checks.registry.registry.get_checks()
    assert check_metadata_fields.tags == (checks.Tags.models,)
    assert check_metadata_fields() == []


def test_manage_check_refuses_a_bad_model(tmp_path):
    """``manage.py check`` fails at start-up, naming the model and what to change."""
    app = tmp_path / "badapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(
        "from django.db import models\n"
        "from betaassi_django.models import BaseThread\n"
        "class Huge(BaseThread):\n"
        "    essay = models.CharField(max_length=100000)\n"
    )
    (tmp_path / "badsettings.py").write_text(
        "from tests.settings import *\nINSTALLED_APPS = [*INSTALLED_APPS, 'badapp']\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{settings.BASE_DIR}", "DJANGO_SETTINGS_MODULE": "badsettings",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "badapp.Huge.essay: max_length=100000 needs up to 196 metadata keys" in done.stderr
    assert "betaassi.E004" in done.stderr
