"""The distributions are published as `aegisgov-*`: on PyPI `aegis-sdk` and `aegis-langchain` are other
projects, so no page's command block may `pip install` an `aegis-*` name, and each package's `__version__`
reads the metadata of its own distribution."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
# `pip install aegis-sdk`, `uv add 'aegis-langchain[agents]'`, … but not a path (`./packages/aegis-sdk`).
SQUATTED_INSTALL = re.compile(
    r"""(?:pip|uv pip|uv) (?:install|add)\b[^\n`]*?(?<![/\w.-])['"]?aegis-(?:sdk|server|fastapi|langchain|mcp)\b"""
)


def _pages() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "packages").glob("*/README.md")),
    ]


def _fenced_lines(page: Path) -> list[tuple[int, str]]:
    """The lines inside ``` blocks: the commands a reader copies (prose may name the other projects)."""
    lines, inside = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append((number, line))
    return lines


def test_no_page_installs_a_name_that_belongs_to_another_project() -> None:
    found = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in _pages()
        for number, line in _fenced_lines(page)
        if SQUATTED_INSTALL.search(line)
    ]
    assert found == []


def test_the_pattern_catches_what_it_is_for() -> None:
    assert SQUATTED_INSTALL.search("pip install aegis-sdk")
    assert SQUATTED_INSTALL.search("pip install 'aegis-langchain[agents]'")
    assert not SQUATTED_INSTALL.search("pip install ./packages/aegis-sdk './packages/aegis-langchain[agents]'")
    assert not SQUATTED_INSTALL.search("pip install aegisgov-sdk")
    assert SQUATTED_INSTALL.search("pip install aegis-mcp")
    assert not SQUATTED_INSTALL.search("pip install aegisgov-mcp")


def test_each_package_reads_the_version_of_its_own_distribution() -> None:
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        assert name.startswith("aegisgov-"), name
        sources = "".join(p.read_text(encoding="utf-8") for p in (pyproject.parent / "src").rglob("*.py"))
        assert f'installed_version("{name}")' in sources, f"{name}: no __version__ = installed_version({name!r})"
