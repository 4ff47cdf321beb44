"""The node imports nothing of the client, and the package has no import circle.

The circle check parses every module of the package with ``ast`` and counts EVERY import of a package module:
at module level, inside functions (lazy imports) and under ``if TYPE_CHECKING:`` alike, since each one is a
dependency of one module on another, and a lazy one only hides a circle until the day it runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import clustrix_futures

PACKAGE = Path(clustrix_futures.__file__).parent
NODE_MODULES = ["clustrix_futures.node.worker", "clustrix_futures.node.s3", "clustrix_futures.node.host_supervisor",
                "clustrix_futures.node.checkpointing", "clustrix_futures.worker", "clustrix_futures.hostrun"]


def allowed_on_the_node(name: str) -> bool:
    return (name in ("clustrix_futures", "clustrix_futures.errors", "clustrix_futures.checkpoint",
                     "clustrix_futures.worker", "clustrix_futures.hostrun", "clustrix_futures.node",
                     "clustrix_futures.runfiles")
            or name.startswith(("clustrix_futures.node.", "clustrix_futures.runfiles.")))


def test_the_node_loads_only_runfiles_and_errors_of_the_package():
    for module in NODE_MODULES:
        code = (f"import sys, json, {module}; "
                "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'clustrix_futures')))")
        loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                           cwd="/").stdout)
        assert module in loaded
        assert [name for name in loaded if not allowed_on_the_node(name)] == [], module


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules that the module at ``path`` imports, anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of the graph, as the list of its modules (first repeated at the end); [] if none.

    The package's ``__init__`` is left out as a target: every submodule's import runs it first anyway, and at
    run time it imports nothing (its exports are lazy; its imports under ``TYPE_CHECKING`` are for type checkers).
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module] - {"clustrix_futures"}):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "clustrix_futures.node.worker" in graph["clustrix_futures.worker"]  # the parse sees imports
    cycle = find_cycle(graph)
    assert cycle == [], "import circle: " + " -> ".join(cycle)


def test_the_circle_finder_finds_circles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
