"""Every module under packages/*/src says what other modules may import: a top-level `__all__` (a literal
list of names; private modules too, an empty list when nothing is for others), and every name it lists
exists. The modules are found with pkgutil, without importing them; each test then imports its module,
except the few that run on import (`python -m aegis_server`, the Alembic environment), whose names are
checked in their source."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "packages").glob("*/src"))
# Run when imported: their names are checked in the source instead.
RUN_ON_IMPORT = {"aegis_server.__main__", "aegis_server.store.migrations.env"}


def _walk(path: Path, prefix: str) -> list[tuple[str, Path]]:
    """(dotted name, file) of every module below `path`, packages first, without importing anything."""
    found = []
    for info in pkgutil.iter_modules([str(path)], prefix):
        short = info.name.rsplit(".", 1)[-1]
        if info.ispkg:
            found.append((info.name, path / short / "__init__.py"))
            found.extend(_walk(path / short, info.name + "."))
        else:
            found.append((info.name, path / f"{short}.py"))
    return found


def _modules() -> list[tuple[str, Path]]:
    return [module for source in SOURCES for module in _walk(source, "")]


def _declared(tree: ast.Module, file: Path) -> list[str] | None:
    """The names of the top-level `__all__` (a literal list or tuple of strings), None when there is none."""
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id == "__all__":
            assert isinstance(value, ast.List | ast.Tuple), f"{file}: __all__ must be a literal list"
            names = [element.value for element in value.elts if isinstance(element, ast.Constant)]
            assert all(isinstance(n, str) for n in names) and len(names) == len(value.elts), f"{file}: __all__"
            return [str(n) for n in names]
    return None


def _bound_at_top_level(tree: ast.Module) -> set[str]:
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    return bound


def test_the_walk_finds_every_package() -> None:
    names = {name for name, _ in _modules()}
    assert {"aegis_sdk", "aegis_server", "aegis_fastapi", "aegis_langchain", "aegis_mcp"} <= names
    assert "aegis_server.store.migrations.versions.r0001_initial_schema" in names
    assert len(names) == len(list((ROOT / "packages").glob("*/src/**/*.py")))


@pytest.mark.parametrize(
    ("name", "file"),
    [pytest.param(name, file, id=name) for name, file in _modules()],
)
def test_module_defines_all_and_every_listed_name_exists(name: str, file: Path) -> None:
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    declared = _declared(tree, file)
    assert declared is not None, f"{name} ({file.relative_to(ROOT)}) has no top-level __all__"
    assert len(set(declared)) == len(declared), f"{name}.__all__ lists a name twice"
    if name in RUN_ON_IMPORT:
        missing = set(declared) - _bound_at_top_level(tree)
    else:
        module = importlib.import_module(name)
        missing = {listed for listed in declared if not hasattr(module, listed)}
    assert not missing, f"{name}.__all__ lists names it does not define: {sorted(missing)}"
