"""The package's layers stay as the folders say: each imports only from its own layer or the ones below, no module
imports itself back through others, the reference is reached only through the loader, and no module takes
another's private name. Read from the sources (every import statement, function-level ones included), so an
import that runs only on some path counts too. Each rule is shown failing on a copy of the package with one
import added."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "conformance"
PACKAGE = "moe_conformance"
# Bottom to top. A module's layer is its first path component; the package's own top-level modules (the public
# API, the pytest test modules and conftest, ``python -m``) sit above every layer.
LAYERS = ("vocabulary", "cases", "implementations", "checks", "run")
TOP = len(LAYERS)
# The implementation under test that this project ships: loaded by name, by the loader alone, so the harness
# stays an independent oracle.
REFERENCE = (f"{PACKAGE}.wrappers", f"{PACKAGE}.reference")
LOADER = f"{PACKAGE}.implementations.loader"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def layer(module: str) -> int:
    first = module.removeprefix(PACKAGE).lstrip(".").split(".")[0]
    return LAYERS.index(first) if first in LAYERS else TOP


def imports(path: Path, root: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of the file, relative ones
    resolved; and every string naming a module of the reference (``importlib.import_module("...")``)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            # ``from . import plugin``: the submodule is what is imported (its package's __init__ runs first,
            # which is no edge of the graph: the package is where the submodule lives)
            submodules = [f"{target}.{n}" for n in names if is_module(f"{target}.{n}", root) or f"{target}.{n}".startswith(REFERENCE)]
            found += [(s, [], node.lineno) for s in submodules]
            if len(submodules) < len(names):
                found.append((target, [n for n in names if f"{target}.{n}" not in submodules], node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(REFERENCE):
            found.append((node.value, [], node.lineno))
    return found


def is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(root: Path = PACKAGE_DIR) -> list[str]:
    """Every breach of the layering in the package at ``root``, one line each."""
    found: list[str] = []
    graph: dict[str, set[str]] = {}
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    for module, path in sorted(modules.items()):
        where = path.relative_to(root)
        for target, names, line in imports(path, root):
            if target.startswith(REFERENCE):
                if module != LOADER:
                    found.append(f"{where}:{line}: imports the reference ({target}); only {LOADER} loads it")
                continue
            if not target.startswith(PACKAGE) or target not in modules:
                continue
            if layer(target) > layer(module):
                found.append(f"{where}:{line}: imports upward, {target} ({LAYERS[layer(target)] if layer(target) < TOP else 'top'}) "
                             f"from layer {LAYERS[layer(module)] if layer(module) < TOP else 'top'}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{where}:{line}: takes private name(s) {private} of {target}")
            if target != module:
                graph.setdefault(module, set()).add(target)
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [[*group, group[0]] for group in groups]


def test_the_package_is_layered():
    assert violations() == []


def test_every_module_sits_in_a_layer_or_at_the_top():
    """A new folder is a new layer, placed in ``LAYERS`` on purpose: otherwise it would count as the top."""
    tops = {p.relative_to(PACKAGE_DIR).parts[0] for p in PACKAGE_DIR.rglob("*.py") if layer(module_name(p, PACKAGE_DIR)) == TOP}
    assert tops <= {"__init__.py", "__main__.py", "conftest.py", "test_conformance.py", "test_completeness.py"}, tops


@pytest.mark.parametrize(
    ("module", "added", "caught"),
    [
        ("cases/setting.py", "from ..run import plugin", "imports upward, moe_conformance.run.plugin (run) from layer cases"),
        ("checks/oracle.py", "from .. import wrappers", "imports the reference (moe_conformance.wrappers)"),
        ("checks/oracle.py", "import importlib\nimportlib.import_module('moe_conformance.reference.calibration')", "imports the reference"),
        ("cases/arch.py", "from . import files", "import cycle: moe_conformance.cases.arch -> moe_conformance.cases.files"),
        ("run/terminal.py", "from ..checks.verdicts import _measuring", "takes private name(s) ['_measuring']"),
    ],
    ids=["upward", "reference", "reference-by-name", "cycle", "private"],
)
def test_a_breach_is_caught(tmp_path, module, added, caught):
    root = tmp_path / "conformance"
    shutil.copytree(PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "fixtures"))
    target = root / module
    target.write_text(target.read_text() + f"\n\ndef _breach():\n    {added.replace(chr(10), chr(10) + '    ')}\n")
    found = violations(root)
    assert any(caught in line for line in found), found
