"""The package's layout: no import circles, a short top level, small modules, each module says
what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "liverseg_helpers"
PACKAGE = PACKAGE_DIR.name
MAX_TOP_LEVEL_ENTRIES = 15
# STYLE.md: split a module that passes ~400 lines; this stops one from growing far past it.
MAX_MODULE_LINES = 420


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """Dotted name of a module file (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def find_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {
        module_name(path, package_dir): path
        for path in sorted(package_dir.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules one module imports, at its top or inside a function.

    ``from pkg.sub import name`` counts as an import of ``pkg.sub.name`` when that is a
    module, otherwise of ``pkg.sub``; relative imports are resolved against the module.
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.add(child if child in modules else source)
    return {module for module in found if module in modules and module != name}


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    modules = find_modules(package_dir)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of a graph: its strongly connected components with more than one
    module, or a module importing itself (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_find_cycles_sees_a_circle_and_a_chain():
    chain = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycles(chain) == []
    assert find_cycles({**chain, "c": {"a"}, "d": {"d"}}) == [["a", "b", "c"], ["d"]]


def test_import_graph_reads_relative_and_lazy_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Top."""\n')
    (package / "sub" / "__init__.py").write_text('"""Sub."""\n')
    (package / "sub" / "one.py").write_text("from . import two\n")
    (package / "sub" / "two.py").write_text("def f():\n    from pkg.sub import one\n")
    graph = import_graph(package)
    assert graph["pkg.sub.one"] == {"pkg.sub.two"}
    assert graph["pkg.sub.two"] == {"pkg.sub.one"}
    assert find_cycles(graph) == [["pkg.sub.one", "pkg.sub.two"]]


def test_no_import_circles():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules that import each other (in a circle): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_top_level_is_short():
    entries = sorted(
        path.name
        for path in PACKAGE_DIR.iterdir()
        if path.name != "__pycache__" and (path.suffix == ".py" or path.is_dir())
    )
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, (
        f"{len(entries)} entries at the top of {PACKAGE} (at most {MAX_TOP_LEVEL_ENTRIES}): "
        f"{entries}"
    )


@pytest.mark.parametrize("name", sorted(find_modules()))
def test_module_says_what_it_is_for(name):
    path = find_modules()[name]
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and docstring.strip(), f"{path}: no module docstring"
    first_line = docstring.strip().splitlines()[0]
    assert len(first_line.split()) >= 3, f"{path}: first docstring line too short: {first_line!r}"


def modules_longer_than(max_lines: int, package_dir: Path = PACKAGE_DIR) -> dict[str, int]:
    """The modules with more than ``max_lines`` lines, with their line counts."""
    counts = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in find_modules(package_dir).items()
    }
    return {name: n for name, n in counts.items() if n > max_lines}


def test_modules_longer_than_sees_a_long_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "long.py").write_text("x = 1\n" * 12)
    assert modules_longer_than(10, package) == {"pkg.long": 12}
    assert modules_longer_than(12, package) == {}


def test_modules_stay_small():
    too_long = modules_longer_than(MAX_MODULE_LINES)
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them): {too_long}"
