"""The import graph of the suite's own packages: no cycle, and the layers point one way.

Every ``import`` and ``from ... import`` in every module counts, also those inside a function
(a lazy import hides a circle from the interpreter, not from a reader). A module's name stands
for the module itself and for its package's ``__init__``: ``from servers import auth`` is an
import of ``servers.auth``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sobranie_contract", "servers", "sobranie_bench")
"""The suite's top-level packages, lowest layer first."""


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in :data:`PACKAGES`."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The suite's modules that ``name`` imports (anywhere in its body)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:  # ``from a.b import name``: module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
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
                    out.append(sorted(component))
    return out


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a circle of three and a self-contained pair are reported."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(edges) == [["a", "b", "c"], ["d", "e"]]


def test_layers_point_one_way() -> None:
    """The contract imports neither side; servers never import the benchmark (its clients
    least of all), so a server runs without the harness installed."""
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items() for target in targets
        if (name.startswith("sobranie_contract") and not target.startswith("sobranie_contract"))
        or (name.startswith("servers") and target.startswith("sobranie_bench")))
    assert wrong == []


def test_graph_sees_the_imports() -> None:
    """The walk resolves ``from package import module`` and relative imports."""
    edges = graph()
    assert "sobranie_contract.wire" in edges["servers.hub"]
    assert "servers.hub" in edges["servers.ws"]
