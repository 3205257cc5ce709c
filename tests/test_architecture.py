"""The package's shape: layers that only import downwards, no import cycles (function-level imports
included), short functions in the training package, and a light command line."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "scenetag"

# Lowest first. A module may import its own layer or lower ones, never a higher one.
LAYERS: list[set[str]] = [
    {"version", "errors", "io", "runs", "model_meta", "metrics", "report", "presets"},  # pure helpers, no scenetag dependencies above
    {"data"},
    {"config"},
    {"models"},
    {"checkpoint"},
    {"infer"},
    {"train"},
    {"workflows"},
    {"cli", "__main__", "training", "predict", "__init__", "notebook"},  # entry points (command line, notebook API) and compatibility names
]
MAX_LINES = 60  # per function, anywhere in the package


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:  # `from .pkg import submodule` imports the submodule
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in known else target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Every scenetag module -> the scenetag modules it imports anywhere (top level or inside functions)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "scenetag"}
            elif isinstance(node, ast.ImportFrom):
                deps |= {d for d in _resolve(name, path.name == "__init__.py", node, known) if d.split(".")[0] == "scenetag"}
        graph[name] = {d for d in deps if d != name and d in known}
    return graph


def layer_of(module: str) -> int:
    unit = module.split(".")[1] if "." in module else "__init__"
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{module}: not assigned to a layer in tests/test_architecture.py")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["scenetag.metrics"] = graph["scenetag.metrics"] | {"scenetag.checkpoint"}
    graph["scenetag.checkpoint"] = graph["scenetag.checkpoint"] | {"scenetag.metrics"}
    assert find_cycle(graph) is not None


def test_layers_only_import_downwards():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})" for m, deps in import_graph().items() for d in deps if layer_of(d) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "scenetag.checkpoint" in graph["scenetag.infer.predictor"]  # imported inside Predictor.__init__
    assert "scenetag.train.recipe" in graph["scenetag.cli"]


def test_functions_are_short():
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"]])
def test_help_does_not_import_torch(args):
    code = f"import sys; from scenetag.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'timm', 'sklearn', 'onnxruntime', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
