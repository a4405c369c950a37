"""The package's shape, checked from the source's imports (docs/architecture.md).

- No cycles among the modules' top-level imports (imports inside functions are allowed to be
  lazy, e.g. torch for a command that may not need it, but not to hide a cycle: they are
  checked too, except a submodule reaching its own package's ``__init__``).
- The library never imports ``lenet5.commands``: only ``lenet5.cli`` and the commands do.
- ``lenet5.scratch`` (the readable NumPy engine) imports NumPy and ``models.spec`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "lenet5"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names an ``from X import Y`` refers to: ``X.Y`` where that is a module."""
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def imports(module: str, top_level_only: bool) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.update(resolve(module, path.name == "__init__.py", node))
    return {m for m in out if m == "lenet5" or m.startswith("lenet5.")}


def owner(name: str) -> str | None:
    """The module file an import name lands in (``lenet5.data.datasets.X`` -> its module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph(top_level_only: bool) -> dict[str, set[str]]:
    g = {}
    for m in MODULES:
        deps = {owner(i) for i in imports(m, top_level_only)} - {None, m}
        # A submodule importing its own package (e.g. ``from . import register_model``) is
        # Python's normal package initialisation, not a cycle between concerns.
        g[m] = {d for d in deps if not m.startswith(d + ".")}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_checker_sees_the_package():
    assert {"lenet5.training.loop", "lenet5.inference.load", "lenet5.data.idx"} <= set(MODULES)
    assert "lenet5.data.datasets" in graph(True)["lenet5.training.loop"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("top_level_only", [True, False], ids=["top-level", "all-imports"])
def test_no_import_cycles(top_level_only):
    cycle = find_cycle(graph(top_level_only))
    assert cycle is None, " -> ".join(cycle)


def test_library_never_imports_the_commands():
    offenders = {m: sorted(i for i in imports(m, False) if i.startswith("lenet5.commands"))
                 for m in MODULES
                 if m != "lenet5.cli" and not m.startswith("lenet5.commands")}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_numpy_engine_imports_numpy_and_the_spec_alone():
    for m in MODULES:
        if m.startswith("lenet5.scratch"):
            tree = ast.parse(MODULES[m].read_text())
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, ast.ImportFrom) and not n.level}
            assert not names & {"torch", "lenet5"}, (m, names)
            internal = {owner(i) for i in imports(m, False)} - {None}
            assert all(i.startswith("lenet5.scratch") or i in ("lenet5.models.spec",
                       "lenet5.checkpoint", "lenet5.models") for i in internal), (m, internal)


def test_the_command_line_parser_does_not_import_torch():
    """``lenet5 --help`` and every command's flags come without PyTorch's import (about 2 s
    here), Numba's or Pillow's: commands import them when they run (issue 14, start-up)."""
    import subprocess
    import sys

    code = ("import sys; from lenet5.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numba', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_compiled_engine_trains_without_importing_torch():
    """``lenet5 train`` in the compiled engine on plain or affine-distorted data never imports
    PyTorch (about 2 s of start-up here; issue 14): its modules import none at the top, and
    ``tests/test_presets.py`` trains the fast preset with ``import torch`` made to fail."""
    import subprocess
    import sys

    code = ("import sys; import lenet5.cli, lenet5.commands.train, lenet5.training.loop, "
            "lenet5.training.compiled_engine, lenet5.checkpoint; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout


def test_the_compiled_engine_loads_numba_without_scipys_linear_algebra():
    """Numba's first kernel load would import ``scipy.linalg`` (0.38 s of start-up in a profile) to
    decide whether ``np.correlate`` may use BLAS; ``lenet5.compiled`` loads Numba's registries
    without it, then sets that flag as Numba would have, and ``np.dot`` in other jitted code
    still works (it imports BLAS when compiled)."""
    import subprocess
    import sys

    code = ("import sys; import lenet5.compiled, lenet5.training.compiled_engine; "
            "print('scipy.linalg' in sys.modules); "
            "import numba.np.arraymath as a, numpy as np; from numba import njit; "
            "import importlib.util; print(a._HAVE_BLAS == (importlib.util.find_spec('scipy') "
            "is not None)); print(njit(lambda x: np.dot(x, x))(np.ones(3)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "3.0"], out.stdout + out.stderr


def test_every_command_help_opens_with_what_the_command_does():
    """``lenet5 CMD --help`` starts with the line ``lenet5 --help`` lists for it (or longer)."""
    import argparse

    from lenet5.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = {a.dest: a.help for a in sub._choices_actions}
    assert {"train", "predict", "viz", "serve", "evaluate"} <= set(sub.choices)
    for name, parser in sub.choices.items():
        assert parser.description, name
        assert parser.description.startswith(listed[name]) or name == "train", name
