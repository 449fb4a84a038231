"""The layers as docs/design.md draws them, checked on the source: no import cycle in src/
(imports inside functions counted: that is where cycles hide), and no test module importing
another test module (shared helpers live in tests/helpers.py and tests/conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetctl"
TESTS = Path(__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module of the tool that ``path`` imports, at any depth of its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    # a module importing its own package (``from resnetctl import paths``) depends on the named
    # submodule, not on the package's __init__
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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


def test_the_scan_sees_function_level_imports_and_finds_a_planted_cycle():
    graph = import_graph()
    assert "resnetctl.data.store" in graph["resnetctl.training.settings"]  # imported inside build_config
    planted = {**graph, "resnetctl.errors": graph["resnetctl.errors"] | {"resnetctl.runs"}}
    assert any("resnetctl.errors" in c and "resnetctl.runs" in c for c in cycles(planted))


def test_src_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_test_module_imports_another():
    own = {p.stem for p in TESTS.glob("test_*.py")}
    offenders = {}
    for path in TESTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            hits = {n.rsplit(".", 1)[-1] for n in names if n.startswith("tests.")} & own
            if hits - {path.stem}:
                offenders.setdefault(path.name, set()).update(hits - {path.stem})
    assert offenders == {}
