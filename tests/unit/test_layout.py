"""The layout holds: no import circle, and each layer imports only the layers below it.

Read from the source (ast), not by importing, so a lazy import inside a function counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

# shared/<layer> may import only the layers listed (and itself).
BELOW = {
    "core": set(),
    "models": {"core"},
    "store": {"core", "models"},
    "clients": {"core", "models"},
    "flows": {"core", "models", "store", "clients", "flows"},
    "ops": {"core", "models", "store", "clients", "flows"},
    "functions": {"core", "models", "store", "clients", "flows", "ops"},
}
# The composition root: it builds the store and the clients once per process, so it sits above them
# even though it lives in core with the settings it reads.
ROOTS = {"shared.core.runtime": {"store", "clients"}}


def modules(*packages: str) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            deps.update(submodules or [target])
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
    return {d for d in deps if d in known and d != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_in_the_package_or_the_sandboxes():
    known = modules("shared", "sandbox")
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_each_layer_imports_only_the_layers_below_it():
    known = modules("shared")
    wrong = []
    for name, path in known.items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] not in BELOW:
            continue
        for dep in imports(name, path, known):
            layer = dep.split(".")[1] if dep.count(".") else ""
            allowed = BELOW[parts[1]] | ROOTS.get(name, set())
            if layer in BELOW and layer != parts[1] and layer not in allowed:
                wrong.append(f"{name} imports {dep}")
    assert wrong == []


def test_only_the_triggers_touch_azure_functions():
    users = sorted(name for name, path in modules("shared").items()
                   if any(d in ("azure.functions",) for d in _all_imports(path)) and ".functions" not in name)
    assert users == []


def _all_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out
