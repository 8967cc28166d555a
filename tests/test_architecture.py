"""The layering of docs/architecture.md, read from the code's imports (lazy imports included).

Two properties: no import circle between modules, and every package imports only the layers
below it (the table :data:`MAY_IMPORT`, the same as in docs/architecture.md).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "weightzip"

# layer -> the layers it may import (besides itself). Top-level modules are layers of their own.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "fileio": set(),  # atomic writes, below every layer that writes a file
    "primitives": {"errors"},
    "codec": {"errors", "fileio"},
    "graph": {"errors"},
    "core": {"errors", "primitives"},
    "models": {"errors", "core", "primitives"},
    "data": {"errors", "core", "fileio"},
    "runtime": {"errors", "codec", "core", "models", "primitives", "graph"},
    "export": {"errors", "codec", "core", "graph", "runtime", "fileio"},
    "training": {"errors", "core", "primitives", "data", "models", "fileio"},
    "analysis": {"errors", "codec", "core", "primitives", "runtime", "training", "fileio"},
    "methods": {"errors", "core", "primitives", "training", "analysis"},
    "report": {"errors", "codec", "analysis"},
    "api": {"weightzip", "errors", "codec", "core", "runtime", "methods", "analysis", "graph"},
    "jobs": {"weightzip", "errors", "codec", "core", "primitives", "models", "data", "runtime",
             "training", "analysis", "methods", "report", "api", "export", "fileio"},
    "cli": {"weightzip", "errors", "core", "training", "analysis", "report", "api", "jobs"},
    "__main__": {"cli"},
    "weightzip": {"errors", "core", "api"},  # the package's __init__: the public API only
}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (f, is_pkg)
    return mods


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run, so never a circle)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    return skip


def _imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """module -> the package modules it imports at run time (at any depth of the file)."""
    graph: dict[str, set[str]] = {}
    for me, (path, is_pkg) in mods.items():
        here = me.split(".") if is_pkg else me.split(".")[:-1]
        out: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        skip = _typing_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for t in names:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != me:
                    out.add(t)
        graph[me] = out
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "weightzip"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of size > 1 (Tarjan). A module importing its own parent
    package (whose ``__init__`` runs first anyway) is not counted as an edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _imports(_modules())


def test_no_import_circle(graph):
    assert _cycles(graph) == []


def test_every_layer_is_in_the_table(graph):
    assert {_layer(m) for m in graph} <= set(MAY_IMPORT), "a new package needs its row in MAY_IMPORT and the docs"


def test_layers_import_only_downwards(graph):
    bad = defaultdict(list)
    for me, targets in graph.items():
        for t in targets:
            a, b = _layer(me), _layer(t)
            if a != b and b not in MAY_IMPORT.get(a, set()):
                bad[f"{a} -> {b}"].append(f"{me} imports {t}")
    assert not bad, dict(bad)


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"p.x": {"p"}, "p": {"p.x"}}) == []  # importing one's own package is no circle
