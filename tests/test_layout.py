"""The package's layout: subpackages by job, every import pointing down, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "textgen"
# Lowest first: a module may import its own subpackage and any listed before it, never one after.
LAYERS = [
    "core", "data", "model", "run", "evaluation", "generation", "training", "serving", "comparison",
]  # fmt: skip
ENTRY = len(LAYERS)  # the modules directly in textgen/: entry points, the only code that prints
# Entry points of child processes that live beside their job: they may print and use the CLI.
PROCESS_ENTRIES = {"textgen.comparison.worker"}


def module_name(path: Path) -> str:
    """`textgen.data.corpus` for textgen/data/corpus.py; `textgen.data` for its __init__.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of a textgen module: its subpackage's place in LAYERS, or ENTRY."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return ENTRY


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The textgen modules a file imports, at any depth (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("textgen")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("textgen"):
            assert node.level == 0, f"{path}: relative import; use absolute ones"
            # `from textgen.run import runlog` imports the module textgen.run.runlog
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules or {node.module}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the textgen modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}


def test_every_module_lives_in_a_known_subpackage_or_is_an_entry_point():
    entry = {m for m in import_graph() if layer_of(m) == ENTRY}
    assert entry == {
        "textgen", "textgen.__main__", "textgen.cli", "textgen.index", "textgen.train",
        "textgen.sample", "textgen.evaluate", "textgen.compare", "textgen.export", "textgen.serve",
    }  # fmt: skip
    for sub in LAYERS:
        assert (PACKAGE / sub / "__init__.py").read_text().startswith('"""'), f"{sub}: no docstring"


def test_no_import_points_up_a_layer():
    upward = [
        f"{m} imports {d}"
        for m, deps in import_graph().items()
        if m != "textgen" and layer_of(m) < ENTRY
        for d in deps - ({"textgen.cli"} if m in PROCESS_ENTRIES else set())
        if layer_of(d) > layer_of(m) and d != "textgen"
    ]
    assert upward == []


def test_the_package_root_imports_only_the_core():
    assert {layer_of(d) for d in import_graph()["textgen"]} <= {LAYERS.index("core")}


def test_no_import_cycle():
    graph = import_graph()
    graph["textgen"] = set()  # every module's parent package runs first; it imports only core
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_entry_points_print():
    printing = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if layer_of(module_name(p)) < ENTRY and module_name(p) not in PROCESS_ENTRIES
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
    )
    assert printing == []


def test_no_entry_point_loads_tensorflow_on_import():
    # Bad input must fail in a blink: TensorFlow loads only once a command gets to work.
    entries = ["index", "train", "sample", "evaluate", "compare", "export", "serve", "__main__"]
    code = (
        f"import importlib, sys\nfor m in {entries}: importlib.import_module('textgen.' + m)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
