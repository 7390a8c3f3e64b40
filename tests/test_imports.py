"""Every ``pooled`` and ``harmonization`` module imports on its own, and imports form no circle.

Two checks. At run time: in a fresh interpreter, each module is imported first, with every
module of the two packages removed from ``sys.modules`` before it (third-party packages stay
loaded, so the loop is quick), so a circle of top-level imports fails whichever module of it
is imported first. Statically: the graph of every import statement, those inside functions
included (an import deferred into a function hides a circle from the first check until the
function runs), has no circle other than the known ones listed below.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pooled", "harmonization")
# Circles allowed (none): each entry would be a pair of modules of one strongly connected
# component. A new circle fails the test.
KNOWN_CIRCLES: frozenset[frozenset[str]] = frozenset()

_IMPORT_EACH = """
import importlib, json, sys, traceback
names, roots = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
failures = {}
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in roots]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` below ``root``: dotted name -> file."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_each(names: list[str], packages: Iterable[str], root: Path) -> dict[str, str]:
    """Import each module first in turn, in one fresh interpreter: name -> traceback of failures."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names), json.dumps(list(packages))],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (``TYPE_CHECKING`` blocks aside)."""

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {
                    resolve(f"{node.module}.{alias.name}") or resolve(node.module)
                    for alias in node.names
                }
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_imports_on_its_own() -> None:
    names = sorted(module_names(ROOT, PACKAGES))
    assert "pooled.runner" in names and "harmonization.schema" in names
    failures = import_each(names, PACKAGES, ROOT)
    assert not failures, "\n".join(f"{name}:\n{trace}" for name, trace in failures.items())


def test_no_new_import_circle() -> None:
    graph = import_graph(module_names(ROOT, PACKAGES))
    found = {frozenset(c) for c in circles(graph)}
    assert found <= KNOWN_CIRCLES, sorted(sorted(c) for c in found - KNOWN_CIRCLES)
    assert not any("pooled" in {m.split(".")[0] for m in graph[h]} for h in graph if
                   h.startswith("harmonization")), "harmonization imports pooled"  # fmt: skip


def test_the_simulation_writers_circle_stays_broken() -> None:
    graph = import_graph(module_names(ROOT, PACKAGES))
    assert "pooled.simulate.consortium" not in graph["pooled.simulate.trajectory"]
    assert {"pooled.simulate.consortium", "pooled.simulate.trajectory"} & graph[
        "pooled.simulate.writers"
    ] == set()


@pytest.fixture
def circular_package(tmp_path: Path) -> Path:
    """``circ.a`` and ``circ.b`` import each other at the top; ``circ.c`` and ``circ.d`` only
    inside a function."""
    package = tmp_path / "circ"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "a.py").write_text("from circ.b import B\n\nA = 1\n", encoding="utf-8")
    (package / "b.py").write_text("from circ.a import A\n\nB = 2\n", encoding="utf-8")
    (package / "c.py").write_text(
        "def f():\n    from circ.d import D\n    return D\n\n\nC = 3\n", encoding="utf-8"
    )
    (package / "d.py").write_text(
        "def g():\n    from circ.c import C\n    return C\n\n\nD = 4\n", encoding="utf-8"
    )
    return tmp_path


def test_the_checks_see_a_circle(circular_package: Path) -> None:
    """The checks can fail: a top-level circle fails the import, a deferred one the graph."""
    modules = module_names(circular_package, ("circ",))
    failures = import_each(sorted(modules), ("circ",), circular_package)
    assert set(failures) == {"circ.a", "circ.b"}
    assert "partially initialized module" in failures["circ.a"]
    found = circles(import_graph(modules))
    assert sorted(sorted(c) for c in found) == [["circ.a", "circ.b"], ["circ.c", "circ.d"]]
