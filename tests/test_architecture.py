"""The import graph of the package has no cycle, and docs/architecture.md describes the floors that are enforced.

`lint-imports` (pyproject.toml, run by `make test`) checks the floors and, with its `acyclic_siblings` contract,
cycles among the children of each package. It does not see a package and its own module importing each other
(``responders/__init__.py`` importing ``responders/echo.py`` importing ``responders``); this test does, over every
module of the package, function-level imports included (grimp reads every import statement). Migrations are
Django's, outside the floors.

The architecture page names every module and the floors of the `layers` contract in the contract's order, so a
module added, moved or renamed without its line there fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grimp
import pytest

PACKAGE = "betaassi_django"
ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / PACKAGE
PAGE = ROOT / "docs" / "architecture.md"


def project_modules(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if m.split(".")[0] == PACKAGE and ".migrations" not in m}


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm, iterative), sorted."""
    modules = project_modules(graph)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in sorted(modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return sorted(cycles)


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """A cycle's modules and the imports that join them, with their line numbers."""
    members = set(cycle)
    lines = [f"{len(cycle)} modules: {', '.join(cycle)}"]
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            details = graph.get_import_details(importer=importer, imported=imported)
            at = ", ".join(f"l.{d['line_number']}" for d in details)
            lines.append(f"  {importer} -> {imported} ({at})")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def test_no_module_imports_itself_round_a_circle(graph: grimp.ImportGraph) -> None:
    cycles = import_cycles(graph)
    assert cycles == [], "Import cycles (break each by moving the shared code down a floor):\n" + "\n".join(
        describe(graph, cycle) for cycle in cycles)


def test_the_cycle_finder_sees_a_package_and_its_module_importing_each_other() -> None:
    """The check above is only as good as its finder: a two-module cycle and a three-module circle, found."""
    graph = grimp.ImportGraph()
    for module in (PACKAGE, f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c", f"{PACKAGE}.d", f"{PACKAGE}.migrations.x"):
        graph.add_module(module)
    graph.add_import(importer=PACKAGE, imported=f"{PACKAGE}.a")
    graph.add_import(importer=f"{PACKAGE}.a", imported=PACKAGE)
    graph.add_import(importer=f"{PACKAGE}.b", imported=f"{PACKAGE}.c")
    graph.add_import(importer=f"{PACKAGE}.c", imported=f"{PACKAGE}.d")
    graph.add_import(importer=f"{PACKAGE}.d", imported=f"{PACKAGE}.b")
    graph.add_import(importer=f"{PACKAGE}.d", imported=f"{PACKAGE}.migrations.x")
    graph.add_import(importer=f"{PACKAGE}.migrations.x", imported=f"{PACKAGE}.d")
    assert import_cycles(graph) == [[PACKAGE, f"{PACKAGE}.a"], [f"{PACKAGE}.b", f"{PACKAGE}.c", f"{PACKAGE}.d"]]


def _section(title: str) -> str:
    """The text of one ``## title`` section of the architecture page."""
    page = PAGE.read_text()
    start = page.index(f"\n## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start: end if end != -1 else len(page)]


def _floors() -> list[list[str]]:
    """The layers of the `floors` contract in pyproject.toml, top first, each as its module names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "floors"]
    return [re.split(r"\s*[|:]\s*", layer.strip()) for layer in contract["layers"]]


def test_the_page_shows_the_floors_of_the_contract_in_its_order() -> None:
    table = _section("The floors")
    positions = []
    for layer in _floors():
        missing = [name for name in layer if f"`{name}`" not in table]
        assert missing == [], f"docs/architecture.md's floors table lacks {missing}"
        positions.append(min(table.index(f"`{name}`") for name in layer))
    assert positions == sorted(positions), "the floors table lists the contract's layers in another order"


def test_the_page_says_what_every_module_owns() -> None:
    owned = _section("What each module owns")
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", owned))
    stale = sorted(name for name in named if not (SOURCE / name).exists())
    assert stale == [], f"docs/architecture.md names modules that do not exist: {stale}"
    modules = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py")
                     if "migrations" not in path.parts and path.name != "__init__.py")
    unnamed = [m for m in modules if m not in named and not any(m.startswith(d) for d in named if d.endswith("/"))]
    assert unnamed == [], f"docs/architecture.md does not say what these modules own: {unnamed}"
