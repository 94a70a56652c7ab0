"""The documentation is the home of the contracts: these tests fail when the code and the pages drift apart.

Each test reads the names the code really uses (settings it reads, check ids it emits, WebSocket error and
close codes, event ops, commands) and looks for every one of them on the page that documents it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from betaassi_django import conf, consumers, frames, turns
from betaassi_django.publishing import events, kinds

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "betaassi_django"
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def _section(page: str, heading: str) -> str:
    """The text of one ``## heading`` section of a page."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", page, re.S | re.M)
    assert match, f"no section {heading!r}"
    return match.group(1)


def _table_keys(section: str) -> set[str]:
    """The backquoted values in the first column of a Markdown table."""
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


def test_every_setting_the_app_reads_is_documented():
    # Every field of the app's settings is read from BETAASSI_<FIELD> (OPENAI_<...> for the remote backend's).
    names = {
        field.name.upper() if field.name.startswith("openai_") else f"BETAASSI_{field.name.upper()}"
        for field in dataclasses.fields(conf.BetaassiSettings)
    }
    settings_source = (ROOT / "project" / "settings.py").read_text()
    names |= set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]+)\"", settings_source))
    assert {"BETAASSI_BACKEND", "BETAASSI_IN_SERVER_PROCESSOR", "DATABASE_URL"} <= names  # the scan works
    page = _page("configuration.md")
    assert sorted(name for name in names if f"`{name}`" not in page) == []


def test_the_system_checks_table_lists_exactly_the_ids_the_code_emits():
    sources = "".join(path.read_text() for path in (PACKAGE / "checks").rglob("*.py"))
    emitted = set(re.findall(r"id=\"(betaassi\.[EW]\d{3})\"", sources))
    assert {"betaassi.E001", "betaassi.E010", "betaassi.W010"} <= emitted
    documented = _table_keys(_section(_page("configuration.md"), "System checks"))
    assert documented == emitted


def test_every_websocket_error_code_is_in_the_error_table():
    source = (PACKAGE / "consumers.py").read_text()
    codes = set(re.findall(r"(?:BadFrame|_error)\(\"(\w+)\"", source))
    codes |= {"model_not_allowed", "quota_exceeded"}  # sent with the quota module's own codes
    assert {"bad_frame", "rate_limited", "busy"} <= codes
    assert _table_keys(_section(_page("websocket.md"), "Error frames")) == codes


def test_every_close_code_and_limit_is_documented():
    page = _page("websocket.md")
    closes = _table_keys(_section(page, "Close codes"))
    assert {str(code) for code in (consumers.CLOSE_NOT_LOGGED_IN, consumers.CLOSE_FORBIDDEN,
                                   consumers.CLOSE_UNKNOWN, consumers.CLOSE_FLOOD)} <= closes
    limits = _section(page, "Limits")
    for value in (consumers.MAX_FRAME_BYTES, consumers.MAX_CONTENT_BYTES, turns.MAX_PENDING_TURNS,
                  frames.HISTORY_MESSAGES):
        assert f"{value:,}" in limits or f"| {value} |" in limits, value
    assert f"| {consumers.MAX_DEPTH} levels |" in limits


def test_every_event_op_and_session_kind_is_documented():
    page = _page("events.md")
    for name in (*events.OPS, *kinds.KINDS):
        assert f'"{name}"' in page or f"`{name}`" in page, name


def test_every_management_command_is_documented():
    commands = {path.stem for path in PACKAGE.rglob("management/commands/*.py") if path.stem != "__init__"}
    assert {"process_publish_queue", "create_api_key"} <= commands
    page = _page("configuration.md")
    assert sorted(name for name in commands if name not in page) == []


def test_no_page_or_module_cites_the_design_file_a_clone_does_not_have():
    cited = [
        str(path.relative_to(ROOT))
        for folder in (PACKAGE, DOCS, ROOT / "project", ROOT / "tests")
        for path in folder.rglob("*")
        if path.suffix in {".py", ".md", ".html"} and path != Path(__file__)
        and "DESIGN.md" in path.read_text()
    ]
    assert cited == []
