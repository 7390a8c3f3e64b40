"""Every ``pooled.models`` module imports on its own, and the modules import no circle.

An import circle closed at module level breaks whichever module a fresh interpreter imports
first, so each module is imported alone in a new interpreter. A circle closed by an import
inside a function (``cox.fit_cox`` importing ``imputation`` lazily while ``imputation`` imports
``cox``) imports fine and only fails or surprises later, so the import graph of the package is
also read statically (every ``import`` statement, at any depth, except under
``TYPE_CHECKING``) and checked for cycles.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
MODELS = ROOT / "pooled" / "models"
MODULES = sorted(f"pooled.models.{f.stem}" for f in MODELS.glob("*.py") if f.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = f"import {module}, sys; print({module}.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"importing {module} alone failed:\n{done.stderr[-3000:]}"
    assert Path(done.stdout.strip()).resolve().is_relative_to(ROOT)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def models_import_graph() -> dict[str, set[str]]:
    """Edges module -> the ``pooled.models`` modules it imports, at any depth."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        tree = ast.parse((MODELS / f"{module.rsplit('.', 1)[1]}.py").read_text())
        skip = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package pooled.models
                    base = "pooled.models" + (f".{base}" if base else "")
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_models_import_no_circle():
    cycle = find_cycle(models_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_cycle_finder_sees_a_lazy_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imputation_does_not_import_the_cox_model():
    assert "pooled.models.cox" not in models_import_graph()["pooled.models.imputation"]
