"""The package's import graph stays layered: every import (module level or inside a function) goes from a higher layer
to a lower one, and no two modules import each other, directly or round a loop."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a package may import only from packages of a lower layer (the top-level scripts sit above all of them)
LAYERS = {
    "dpr.utils": 0,
    "dpr.data": 1, "dpr.models": 1,
    "dpr.eval": 2, "dpr.index": 2, "dpr.encode": 2, "dpr.options": 2,
    "dpr.retrieval": 3, "dpr.training": 3,
    "dpr": 4,
}


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """dpr module -> the dpr modules it imports, wherever in the file the import stands."""
    files = {}
    for path in (root / "dpr").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {n for n in names if n in files and n != module and not module.startswith(n + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> tuple[str, int]:
    package = ".".join(module.split(".")[:2])
    return package, LAYERS[package]


def test_no_import_cycle():
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_goes_down_a_layer():
    upward = []
    for module, imported in module_graph().items():
        package, level = layer(module)
        for target in imported:
            other, other_level = layer(target)
            if other != package and other_level >= level:
                upward.append(f"{module} -> {target}")
    assert upward == []
