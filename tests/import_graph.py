"""The import graph of a package, read from its source, and the circles in it.

Every ``import`` statement counts, wherever it sits: at module level, inside a function (a deferred
import still closes a circle the first time the function runs), under ``if TYPE_CHECKING:`` or in a
``try``. Nodes are modules (``fewshot.hub``; a package is its ``__init__``). ``from pkg import name``
is an edge to ``pkg.name`` when that is a submodule, else to ``pkg``; ``import a.b.c`` and
``from a.b.c import x`` are edges to ``a.b.c`` only. Imports of modules outside the package are left out.

Run it as a script to print the circles of fewshot/ with the line of every import that makes them::

    python tests/import_graph.py [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from itertools import pairwise
from pathlib import Path

Edges = dict[str, dict[str, list[str]]]  # module -> imported module -> ["path:line", ...]


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the package folder ``root``."""
    root = Path(root).resolve()
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _package_of(module: str, path: Path) -> str:
    """The package relative imports of ``module`` start from: itself for an ``__init__``, else its parent."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(package: str, level: int, name: str | None) -> str:
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(root: Path) -> Edges:
    """Every import between modules of the package at ``root``, with the places it is written."""
    files = module_files(root)
    edges: Edges = {module: {} for module in files}

    def add(source: str, target: str, where: str) -> None:
        # The longest prefix that is a module of ours (``fewshot.nets.layers.Conv`` is no module).
        while target and target not in files:
            target = target.rpartition(".")[0]
        if target and target != source:
            places = edges[source].setdefault(target, [])
            if where not in places:  # `from .x import (a, b, c)` is one place, not three
                places.append(where)

    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        shown = path.relative_to(Path(root).resolve().parent)
        for node in ast.walk(tree):
            where = f"{shown}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(module, alias.name, where)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    target = _resolve_relative(_package_of(module, path), node.level, node.module)
                else:
                    target = node.module or ""
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    add(module, submodule if submodule in files else target, where)
    return edges


def _strongly_connected(edges: Edges) -> list[list[str]]:
    """Tarjan's components, iteratively (no recursion limit on deep packages)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle_through(node: str, edges: Edges, within: set[str]) -> list[str]:
    """``[node, ..., node]``, the shortest way back to ``node`` inside its component (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        for child in sorted(edges[current]):
            if child not in within:
                continue
            if child == node:
                path = [current]
                while path[-1] != node:
                    path.append(previous[path[-1]])
                return [*reversed(path), node]
            if child not in previous:
                previous[child] = current
                queue.append(child)
    raise AssertionError(f"{node} is in a component but on no cycle")  # cannot happen for components > 1


def import_cycles(root: Path | str) -> list[list[str]]:
    """The import circles of the package at ``root``, each ``[a, b, ..., a]``, in sorted order.

    For every module caught in a circle, the shortest circle through it; a circle found from two of
    its modules is listed once. An empty list means the package imports no circle.
    """
    edges = import_edges(Path(root))
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue  # self-imports are dropped in import_edges, so a single module is no circle
        members = set(component)
        for node in component:
            cycle = _shortest_cycle_through(node, edges, members)
            ring = cycle[:-1]
            turn = ring.index(min(ring))  # one spelling per circle, starting at its smallest name
            key = tuple(ring[turn:] + ring[:turn])
            if key not in seen:
                seen.add(key)
                cycles.append([*key, key[0]])
    return sorted(cycles)


def describe(cycle: list[str], edges: Edges) -> str:
    """One circle with the import lines that make it, for a failing test or the script."""
    lines = [" -> ".join(cycle)]
    for source, target in pairwise(cycle):
        lines.append(f"    {source} -> {target}: {', '.join(edges[source][target])}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "fewshot"
    edges = import_edges(root)
    cycles = import_cycles(root)
    for cycle in cycles:
        print(describe(cycle, edges))
    print(f"{len(cycles)} import circle(s) in {root}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
