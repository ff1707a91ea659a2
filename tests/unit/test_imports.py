"""Every module of the package imports, and no two modules import each other, directly
or round a longer loop: a cycle makes the import order matter and hides a layer that
is in the wrong place (`cli` and `demo` once imported each other)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path

import pytest

import streams

ROOT = Path(streams.__file__).parent
#: Running it is running the command line (or Alembic's migration run), not importing a
#: module.
NOT_IMPORTABLE = {"streams.__main__", "streams.dialers.twilio.migrations.env"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name, with its source file."""
    found = {"streams": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], "streams."):
        relative = Path(*info.name.split(".")[1:])
        found[info.name] = (
            ROOT / relative / "__init__.py" if info.ispkg else ROOT / f"{relative}.py"
        )
    return found


def imported(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The package's modules that module `name` imports (anywhere in it, lazily too),
    with the packages Python runs on the way."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    found = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a, then a.b
            prefix = ".".join(parts[:end])
            if prefix in known and prefix != name and not name.startswith(prefix + "."):
                found.add(prefix)
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("name", sorted(set(modules()) - NOT_IMPORTABLE))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_module_imports_another_that_imports_it_back() -> None:
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert graph["streams.cli"], "the import graph lost its edges"
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
