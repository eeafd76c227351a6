"""Layout rules of the house, checked on the source: scaffolding in one place, no import cycles, no global
patches while building models."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ivlm_core", "ivlm_ros")
TEST_MODULES = {p.stem for p in (REPO / "test").glob("*.py")}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_product_module_imports_test_code() -> None:
    offenders = []
    for name, path in _modules().items():
        imported = {n.split(".")[0] for n in _imports(path)}
        if imported & (TEST_MODULES | {"test", "conftest"}):
            offenders.append(f"{name}: {sorted(imported & TEST_MODULES)}")
        if '"test"' in path.read_text() and "sys.path" in path.read_text():
            offenders.append(f"{name}: puts test/ on sys.path")
    assert not offenders, offenders


def test_scaffolding_is_used_only_by_tests_benchmarks_and_itself() -> None:
    offenders = []
    for name, path in _modules().items():
        if ".testing" in name or ".bench" in name:
            continue
        used = sorted(n for n in _imports(path) if n.startswith(("ivlm_core.testing", "ivlm_ros.testing")))
        if used:
            offenders.append(f"{name}: {used}")
    assert not offenders, offenders


def test_no_import_cycles_between_library_modules() -> None:
    modules = _modules()
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle worth reporting
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_building_without_init_leaves_torch_init_alone() -> None:
    """Weights that are loaded anyway are not initialised, without patching `torch.nn.init` for every thread."""
    from ivlm_core.model.checkpoint import build_without_init

    original = torch.nn.init.kaiming_uniform_
    seen = []

    def factory() -> torch.nn.Module:
        seen.append(torch.nn.init.kaiming_uniform_ is original)
        return torch.nn.Linear(4, 3)

    layer = build_without_init(factory, torch.device("cpu"))
    assert seen == [True] and torch.nn.init.kaiming_uniform_ is original
    assert layer.weight.device.type == "cpu" and layer.weight.shape == (3, 4)
    source = (REPO / "ivlm_core" / "model" / "checkpoint.py").read_text()
    assert "setattr(nn.init" not in source and "setattr(torch.nn.init" not in source
