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


# The layers, top first (docs/design.md draws the same): a module imports its own layer or those
# below it, never one above. The CLI parses and maps errors to exits; ui draws; plans check a
# command without Keras; the work (train, evaluate, predict, export, summary) runs a plan; runs
# and their records below it; data, models and settings below those; leaves at the bottom.
LAYERS = {
    "cli": ["resnetctl.cli", "resnetctl.__main__", "resnetctl.cli_options", "resnetctl.cli_runtime"],
    "ui": ["resnetctl.ui"],
    "plan": ["resnetctl.plan", "resnetctl.tuning"],  # a study plans its trials and hands them to the trainer
    "work": [
        "resnetctl.training.trainer",
        "resnetctl.training.callbacks",
        "resnetctl.evaluation",
        "resnetctl.prediction",
        "resnetctl.export",
        "resnetctl.reports",
        "resnetctl.diagnose",
        "resnetctl.training.lr_find",
        "resnetctl.training.batch_search",
    ],
    "records": ["resnetctl.runs", "resnetctl.lineage", "resnetctl.tracking", "resnetctl.plots", "resnetctl.outputs"],
    "data, models, settings": [
        "resnetctl.data.*",
        "resnetctl.models",
        "resnetctl.models.*",
        "resnetctl.checkpoints",
        "resnetctl.training.config",
        "resnetctl.training.recipes",
        "resnetctl.training.settings",
        "resnetctl.training.monitors",
        "resnetctl.training.schedules",
        "resnetctl.training.losses",
        "resnetctl.training.distribute",
    ],
    "leaves": [
        "resnetctl",
        "resnetctl.data",
        "resnetctl.training",
        "resnetctl.errors",
        "resnetctl.atomic",
        "resnetctl.locks",
        "resnetctl.paths",
        "resnetctl.signals",
        "resnetctl.hooks",
        "resnetctl.heap",
        "resnetctl.commands",
        "resnetctl.scoring",
    ],
}


def layer_of(module: str) -> int:
    """0 for the top layer; the exact name wins over a ``package.*`` pattern."""
    for exact in (True, False):
        for depth, (_, names) in enumerate(LAYERS.items()):
            for name in names:
                if (name == module) if exact else (name.endswith(".*") and module.startswith(name[:-1])):
                    return depth
    raise AssertionError(f"{module} is in no layer of LAYERS: place it there and in docs/design.md")


def test_imports_go_down_the_layers_only():
    graph = import_graph()
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) < layer_of(module)
    ]
    assert upward == []


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


def test_the_cli_is_a_list_of_short_commands():
    """cli.py holds the commands and nothing else: each short (options, a plan, a call, a render)."""
    tree = ast.parse((SRC / "cli.py").read_text(encoding="utf-8"))
    assert len((SRC / "cli.py").read_text(encoding="utf-8").splitlines()) < 500
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 45
    }
    assert long == {}


def test_only_the_cli_layer_and_ui_import_typer_or_rich():
    offenders = []
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        if layer_of(name) <= 1:  # cli, ui
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich", "click")]
    assert offenders == []
