"""The package's import graph: no circles, and no import from a lower layer to a higher one.

Every module under ``yuzu_onnx/`` is parsed with :mod:`ast`; module-level and
function-level imports both count (a lazy import is still a dependency). Failures print
the offending edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "yuzu_onnx"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# the lowest layers never import these (the pipeline's later stages and the front ends)
LOW_LAYERS = ("ops", "analysis")
ABOVE_LOW = ("plan", "emit", "convert", "session", "pipeline", "cli")
# harnesses that library code must not depend on
HARNESSES = ("testing",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {imported package modules}}`` over every import statement in the file."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # `from . import x` may import submodule x, or a name defined in the package
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    while target not in modules and "." in target:  # a name inside a module
                        target = target.rsplit(".", 1)[0]
                    if target in modules and target != name:
                        graph[name].add(target)
    return graph


def _layer(module: str) -> str:
    """The first component below the package: ``yuzu_onnx.emit.model`` → ``emit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges_text(edges: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {a} -> {b}" for a, b in sorted(edges))


GRAPH = import_graph()


def test_graph_sees_the_package() -> None:
    assert f"{PACKAGE}.format" in GRAPH and f"{PACKAGE}.emit.model" in GRAPH
    assert f"{PACKAGE}.format" in GRAPH[f"{PACKAGE}.emit.model"]
    assert f"{PACKAGE}.layout" in GRAPH[f"{PACKAGE}.importer"]


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append(_edges_text([(a, b) for a in component for b in GRAPH[a] if b in members]))
    assert not cycles, "import cycles (edges inside each cycle):\n" + "\n\n".join(lines)


@pytest.mark.parametrize("layer", LOW_LAYERS)
def test_low_layers_do_not_import_later_stages(layer: str) -> None:
    # a layer that does not exist yet (e.g. ``ops`` before it is created) passes trivially
    bad = [(a, b) for a, targets in GRAPH.items() if _layer(a) == layer
           for b in targets if _layer(b) in ABOVE_LOW]
    assert not bad, f"{layer} imports a later stage:\n" + _edges_text(bad)


def test_plan_does_not_import_emit() -> None:
    bad = [(a, b) for a, targets in GRAPH.items() if _layer(a) == "plan" for b in targets if _layer(b) == "emit"]
    assert not bad, "plan imports emit:\n" + _edges_text(bad)


def test_only_the_front_end_imports_cli() -> None:
    allowed = {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}
    bad = [(a, b) for a, targets in GRAPH.items() if a not in allowed for b in targets if b == f"{PACKAGE}.cli"]
    assert not bad, "modules other than cli/__main__ import cli:\n" + _edges_text(bad)


def test_library_does_not_import_harnesses_or_tools() -> None:
    bad = []
    for name, path in _modules().items():
        if _layer(name) in HARNESSES:
            continue
        bad += [(name, b) for b in GRAPH[name] if _layer(b) in HARNESSES]
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [(name, n) for n in names if n == "tools" or n.startswith("tools.")]
    assert not bad, "library modules import test harnesses or tools/:\n" + _edges_text(bad)


def test_cycle_finder_reports_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
