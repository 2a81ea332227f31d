"""Imports point one way: a lower layer never imports a higher one, and no module cycles.

Every ``import`` in ``src/rollfit`` is read with ``ast`` (module level, inside functions and
under ``if TYPE_CHECKING:`` alike), so a lazy import cannot hide a wrong direction. The
layer order is stated once, in ``LAYERS``; a new subpackage must be placed there.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer (without cycles) and any layer below.
LAYERS = [
    ["rollfit", "rollfit.errors"],          # the package root only lazily names the public API
    ["rollfit.io", "rollfit.ckpt_schema"],
    ["rollfit.model.registry"],             # activations and losses: the config schema's allowed values
    ["rollfit.config"],
    ["rollfit.data", "rollfit.model"],
    ["rollfit.runs"],                       # run folder, lock, checkpoint format
    ["rollfit.training"],                   # the trainer writes checkpoints into a run folder
    ["rollfit.analysis"],                   # surrogate, evaluation, plots, report, optimization
    ["rollfit.pipeline"],                   # train/resume/cross-validation, then the report
    ["rollfit.export", "rollfit.sweep"],
    ["rollfit.cli", "rollfit.__main__"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The rollfit modules ``path`` imports (``from . import x`` names ``pkg.x``)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rollfit")
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "rollfit":
                continue
            subs = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
            found.update(subs)
            if len(subs) < len(node.names) or _init_imports(target):  # names from the package itself
                found.add(target)
    return found - {mod}


def _init_imports(package: str) -> bool:
    """True when a package's ``__init__`` imports rollfit modules (``from pkg import sub`` runs it)."""
    init = SRC.joinpath(*package.split("."), "__init__.py")
    return init.is_file() and "import" in init.read_text() and bool(imports_of(init))


def _is_module(name: str) -> bool:
    p = SRC.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of the longest matching prefix."""
    best, where = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            below = module.startswith(name + ".") and name != "rollfit"  # the root names only itself
            if (module == name or below) and len(name) > best:
                best, where = len(name), i
    if where is None:
        raise AssertionError(f"{module}: expected a layer in LAYERS, but it has none; add it there")
    return where


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.joinpath("rollfit").rglob("*.py")}
    return {m: {d for d in imports_of(p) if d in modules} for m, p in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_every_module_has_a_layer():
    for m in graph():
        layer_of(m)


def test_no_module_imports_a_higher_layer():
    wrong = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
             for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ that imports its submodules is not a cycle with them
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d in edges)} for m, deps in edges.items()}
    cycle = find_cycle(edges)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_checker_sees_function_level_imports_and_cycles(tmp_path, monkeypatch):
    """The checks themselves: a lazy upward import and a two-module cycle are found."""
    pkg = tmp_path / "rollfit"
    (pkg / "training").mkdir(parents=True)
    (pkg / "analysis").mkdir()
    for f in ("__init__.py", "training/__init__.py", "analysis/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "training/run.py").write_text("def f():\n    from ..analysis.report import x\n")
    (pkg / "analysis/report.py").write_text("from . import plots\n")
    (pkg / "analysis/plots.py").write_text("def g():\n    from .report import y\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    edges = graph()
    assert edges["rollfit.training.run"] == {"rollfit.analysis.report"}
    assert layer_of("rollfit.analysis.report") > layer_of("rollfit.training.run")
    assert find_cycle(edges) == ["rollfit.analysis.plots", "rollfit.analysis.report", "rollfit.analysis.plots"]


@pytest.mark.parametrize("name", ["rollfit.runs.folder", "rollfit.runs.lock"])
def test_run_folder_resolution_needs_no_torch(name):
    """The CLI resolves --run before torch is imported: the run-folder modules import none."""
    import subprocess
    import sys

    code = f"import sys, {name}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
