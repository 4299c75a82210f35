"""The shape of ``src/tickerd``, enforced: no import cycle, no module over 450 lines, and
``Settings`` read only where the service is wired together (docs/ARCHITECTURE.md).

Imports are read with :mod:`ast`, not by importing: every ``import`` and ``from ... import``
statement counts, inside functions too, except those in an ``if TYPE_CHECKING:`` block
(they never run). An import names an edge to the module it names (``from .feeds.state
import FeedState`` → ``tickerd.feeds.state``; ``from . import config`` → ``tickerd.config``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "tickerd"
MAX_LINES = 450
#: The wiring: the only modules that may import Settings.
SETTINGS_READERS = frozenset(
    {
        "tickerd",  # the public re-export in __init__.py
        "tickerd.app",
        "tickerd.cli",
        "tickerd.config",
        "tickerd.feeds",
        "tickerd.testing",
        "tickerd.validation",  # reads flags and variables into Settings
        "tickerd.wiring",  # the settings turned into the WebSocket API port's options
    }
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py")) if "egg-info" not in str(p)
}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (``if TYPE_CHECKING:`` bodies left out)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    anchor = parts if is_package(importer) else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports(importer: str, *, runtime_only: bool = True) -> Iterator[tuple[str, ast.alias]]:
    """(module imported, alias) for every import of ``importer`` inside the package."""
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"))
    nodes = _statements(tree) if runtime_only else (
        n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
    )  # fmt: skip
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, alias
            continue
        base = _base(importer, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:
                yield sub, alias
            elif base in MODULES:
                yield base, alias


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imports(name) if target != name} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_checks_see_the_whole_package() -> None:
    assert {"tickerd", "tickerd.app", "tickerd.control.runtime", "tickerd.feeds"} <= set(MODULES)
    edges = graph()
    assert "tickerd.control.ops" in edges["tickerd.control.runtime"]
    # A function-level import is an edge; a TYPE_CHECKING one is not.
    assert "tickerd.feeds.synthetic" in edges["tickerd.feeds"]
    assert "tickerd.control.runtime" not in edges["tickerd.control.ops"]


def test_cycle_finder_finds_function_level_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert found == [], "import cycles among src/tickerd modules: " + "; ".join(
        " <-> ".join(c) for c in found
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_line_limit(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(SRC)}: {lines} lines > {MAX_LINES}"


def test_settings_stop_at_the_wiring() -> None:
    readers = sorted(
        name
        for name in MODULES
        for target, alias in imports(name, runtime_only=False)
        if (target == "tickerd.config" and alias.name in ("Settings", "*"))
        or (target == "tickerd" and alias.name == "Settings")
        or (target == "tickerd.config" and alias.name == "config")
    )
    assert sorted(set(readers) - SETTINGS_READERS) == []
