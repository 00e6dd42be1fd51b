"""The package map holds: imports run realtime -> export -> models -> kernels -> models.dsp, never back,
and no module imports itself round a cycle (docs/DESIGN.md, "Package map").

Every import counts, including those inside functions: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("realtime", "export", "models", "kernels")
# Lower layers may not import higher ones; models.dsp (layer 0) is the bottom.
LAYERS = {"kernels": 1, "models": 2, "export": 3, "realtime": 4}


def layer(module: str) -> int:
    if module == "models.dsp" or module.startswith("models.dsp."):
        return 0
    return LAYERS[module.split(".")[0]]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The livesr modules `module` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a module in a package
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports(m, p, modules) for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    # A package's own __init__ importing its submodules is not an arrow between layers.
    return sorted(
        f"{m} -> {t}"
        for m, targets in edges.items()
        for t in targets
        if layer(t) > layer(m) and not t.startswith(m + ".")
    )


def test_no_import_points_up_the_package_map():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_dsp_layer_needs_no_torch():
    for module, path in all_modules().items():
        if layer(module) == 0:
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
            assert not {name.split(".")[0] for name in names} & {"torch", "triton", "onnxruntime"}, module


@pytest.mark.parametrize(
    "edges, bad",
    [
        ({"models.dsp.chain": {"models.stepper"}}, ["models.dsp.chain -> models.stepper"]),
        ({"models.evaluate": {"realtime.processor"}}, ["models.evaluate -> realtime.processor"]),
        ({"kernels.scan": {"models.mamba"}}, ["kernels.scan -> models.mamba"]),
        ({"realtime.cli": {"export.onnx", "models.dsp.chain"}}, []),
    ],
)
def test_the_checks_catch_what_they_guard(edges: dict[str, set[str]], bad: list[str]):
    assert upward(edges) == bad


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
