"""The shape of the package: each folder is one layer and imports only point down (../ARCHITECTURE.md).

Every ``import`` of a ``wflwv`` module anywhere in a file (top level or inside a function) counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wflwv"

#: layer of each top-level module or folder of the package; a module may import from lower layers only, and
#: from its own folder
LAYERS = {
    "__init__": 0,  # the package root re-exports lazily from models
    "schemes": 1,
    "io": 1,
    "config": 1,
    "protocol": 2,
    "models": 3,
    "baselines": 4,
    "filters": 4,
    "benchmark": 5,
    "training": 6,
    "build": 7,
    "reports": 7,
    "testing": 7,
    "cli": 8,
}


def _unit(module: str) -> str:
    """``wflwv.models.ldeq.net`` -> ``models``; ``wflwv.io`` -> ``io``; ``wflwv`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps = set()
        for name, _ in _imports(path, module):
            if name.startswith("wflwv") and name in modules and name != module:
                deps.add(name)
        graph[module] = deps
    return graph


def test_every_folder_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert units <= set(LAYERS), f"give these a layer in LAYERS: {sorted(units - set(LAYERS))}"


def test_imports_only_point_down_the_layers():
    upward = []
    for module, deps in _graph().items():
        mine = _unit(module)
        for dep in deps:
            theirs = _unit(dep)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine] and mine != "__init__":
                upward.append(f"{module} -> {dep} (layer {LAYERS[mine]} -> {LAYERS[theirs]})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_circles_between_modules():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            # the package root re-exports lazily (module __getattr__), so it is no edge in a circle
            if dep == "wflwv":
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif state.get(dep) is None:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in graph:
        if state.get(module) is None:
            visit(module, [module])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_only_the_cli_imports_click():
    offenders = [
        f"{m}:{line}"
        for m, path in _modules().items()
        for name, line in _imports(path, m)
        if name.split(".")[0] == "click" and _unit(m) != "cli"
    ]
    assert not offenders, f"click imported outside wflwv/cli/: {offenders}"


@pytest.mark.parametrize("heavy", ["dlib", "yt_dlp", "matplotlib", "click", "torch", "ray"])
def test_import_wflwv_is_light(heavy):
    code = f"import sys, wflwv; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"`import wflwv` imports {heavy}"
