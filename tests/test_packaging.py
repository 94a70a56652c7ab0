"""The sdist and the wheel that ``python -m build`` makes carry exactly the package, its data and the licence.

A user installs the wheel, not this checkout: a template, migration or schema missing from it fails only in their
project. The expected members are listed from the source tree, so a new template or migration is checked too.

The build is isolated (``python -m build`` installs setuptools>=77 in a throwaway environment, from pip's cache
or the index): the virtualenv's own setuptools predates the SPDX ``license`` and ``license-files`` fields, so
``--no-isolation`` cannot build it. The wheel is built from the sdist, as pip would from PyPI.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "betaassi_django"
NAME, VERSION = "betaassi_django", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
NOTICE = "betaassi_django/assistants_api/schemas/NOTICE"

pytestmark = pytest.mark.slow  # a build of a few seconds (shared with tests/test_own_project.py)


@functools.cache
def build_distributions() -> tuple[Path, Path]:
    """Build the sdist and the wheel once per test run (the wheel test installs the same wheel)."""
    out = Path(tempfile.mkdtemp(prefix="betaassi-dist-"))
    atexit.register(shutil.rmtree, out, True)
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def package_files() -> set[str]:
    """Every file of the package in the source tree, relative to the repository (compiled files aside)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel_members() -> set[str]:
    with zipfile.ZipFile(build_distributions()[1]) as wheel:
        return set(wheel.namelist())


@pytest.fixture(scope="module")
def sdist_members() -> set[str]:
    with tarfile.open(build_distributions()[0]) as sdist:
        return {member.name for member in sdist.getmembers() if member.isfile()}


def test_the_wheel_holds_exactly_the_package_and_its_licences(wheel_members):
    dist_info = {f"{DIST_INFO}/{name}" for name in
                 ("METADATA", "WHEEL", "top_level.txt", "RECORD", "licenses/LICENSE", f"licenses/{NOTICE}")}
    assert wheel_members == package_files() | dist_info


def test_every_template_migration_command_and_schema_is_in_the_wheel(wheel_members):
    templates = {name for name in package_files() if "/templates/" in name}
    migrations = {name for name in package_files() if "/migrations/" in name}
    commands = {name for name in package_files() if "/management/commands/" in name}
    assert {"betaassi_django/templates/betaassi_django/base.html",
            "betaassi_django/templates/registration/login.html"} <= templates
    assert {"betaassi_django/migrations/0001_initial.py",
            "betaassi_django/assistants_api/migrations/0001_initial.py"} <= migrations
    assert {"betaassi_django/management/commands/process_publish_queue.py",
            "betaassi_django/assistants_api/management/commands/create_api_key.py"} <= commands
    schemas = {"betaassi_django/assistants_api/schemas/requests.json", NOTICE}
    assert templates | migrations | commands | schemas <= wheel_members
    assert not {name for name in wheel_members if name.split("/")[0] in {"tests", "project", "bench", "docs"}}


def test_the_wheel_metadata_names_the_licence_and_the_dependencies(wheel_members):
    with zipfile.ZipFile(build_distributions()[1]) as wheel:
        metadata = wheel.read(f"{DIST_INFO}/METADATA").decode()
        licence = wheel.read(f"{DIST_INFO}/licenses/LICENSE").decode()
    assert licence == (ROOT / "LICENSE").read_text()
    assert licence.splitlines()[:3] == ["MIT License", "", "Copyright (c) the betaassi-django authors"]
    headers = [line for line in metadata.split("\n\n", 1)[0].splitlines()
               if line.startswith(("Name:", "Version:", "License-Expression:", "License-File:"))]
    assert headers == ["Name: betaassi-django", f"Version: {VERSION}", "License-Expression: MIT",
                       "License-File: LICENSE", f"License-File: {NOTICE}"]
    requires = {line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")}
    assert "Django<5.3,>=5.2" in requires
    assert "daphne<5,>=4.2" in requires


def test_the_sdist_holds_the_package_the_licence_readme_and_pyproject(sdist_members):
    prefix = f"{NAME}-{VERSION}/"
    egg_info = {f"{NAME}.egg-info/{name}" for name in
                ("PKG-INFO", "SOURCES.txt", "dependency_links.txt", "requires.txt", "top_level.txt")}
    expected = package_files() | egg_info | {"LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", "PKG-INFO",
                                             "setup.cfg"}
    assert sdist_members == {prefix + name for name in expected}
