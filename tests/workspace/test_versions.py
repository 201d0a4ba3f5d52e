"""One version for every package, exact pins between siblings, every `__version__` equal to its package's
version, and `scripts/bump_version.py` rewriting all of them (DESIGN.md, workspace rules)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {"aegisgov-sdk", "aegisgov-server", "aegisgov-fastapi", "aegisgov-langchain", "aegisgov-mcp"}
REQUIREMENT_RE = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)$")


def _pyprojects(root: Path = ROOT) -> dict[str, dict]:
    found = {}
    for path in sorted((root / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(path.read_text())
        found[data["project"]["name"]] = data
    return found


def _import_name(data: dict) -> str:
    (source,) = data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return source.removeprefix("src/")


def _sibling_requirements(data: dict, names: set[str]) -> list[tuple[str, str]]:
    """(distribution, version specifier) of every requirement on a sibling, extras left out."""
    found = []
    for requirement in data["project"].get("dependencies", []):
        match = REQUIREMENT_RE.match(requirement)
        assert match, requirement
        if match.group(1) in names:
            found.append((match.group(1), match.group(3).strip()))
    return found


def test_every_package_is_found_under_its_distribution_name() -> None:
    assert set(_pyprojects()) == DISTRIBUTIONS


def test_all_packages_share_one_version() -> None:
    versions = {name: data["project"]["version"] for name, data in _pyprojects().items()}
    root_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert set(versions.values()) == {root_version}, versions


def test_sibling_dependencies_are_exact_pins_on_that_version() -> None:
    projects = _pyprojects()
    for name, data in projects.items():
        version = data["project"]["version"]
        for dep, spec in _sibling_requirements(data, set(projects)):
            assert spec == f"=={version}", f"{name} must pin {dep}=={version}, found {dep}{spec}"


def test_the_workspace_root_installs_every_package_from_the_workspace() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = {REQUIREMENT_RE.match(r).group(1) for r in root["project"]["dependencies"]}
    assert required == DISTRIBUTIONS
    assert set(root["tool"]["uv"]["sources"]) == DISTRIBUTIONS
    assert all(source == {"workspace": True} for source in root["tool"]["uv"]["sources"].values())


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_version_attribute_is_its_package_version(name: str) -> None:
    data = _pyprojects()[name]
    module = importlib.import_module(_import_name(data))
    assert module.__version__ == data["project"]["version"], f"{module.__name__}.__version__"
    assert importlib.metadata.version(name) == data["project"]["version"], "the environment is stale: uv sync"


def test_no_package_writes_its_version_in_its_sources() -> None:
    """The pyproject.toml is the one place: `__version__` reads the installed metadata, so a bump cannot miss it."""
    literal = re.compile(r"""^\s*__version__\s*(?::[^=]+)?=\s*["']""", re.MULTILINE)
    written = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "packages").glob("*/src/**/*.py")
        if literal.search(path.read_text(encoding="utf-8"))
    ]
    assert written == []


def test_sdk_depends_on_httpx_pydantic_and_the_opentelemetry_api_only() -> None:
    deps = _pyprojects()["aegisgov-sdk"]["project"]["dependencies"]
    assert sorted(REQUIREMENT_RE.match(d).group(1) for d in deps) == ["httpx", "opentelemetry-api", "pydantic"]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([root / "pyproject.toml", *(root / "packages").glob("*/pyproject.toml")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_bump_script_rewrites_every_version_and_pin_on_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "bump_version.py", copy / "scripts")
    shutil.copy(ROOT / "pyproject.toml", copy)
    for package in (ROOT / "packages").glob("*/pyproject.toml"):
        target = copy / package.parent.relative_to(ROOT)
        target.mkdir(parents=True)
        shutil.copy(package, target)
        shutil.copytree(package.parent / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__"))
    old = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    real_before = _tree_digest(ROOT)

    done = subprocess.run(
        [sys.executable, str(copy / "scripts" / "bump_version.py"), "9.8.7"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert _tree_digest(ROOT) == real_before, "the bump touched the real tree"

    assert tomllib.loads((copy / "pyproject.toml").read_text())["project"]["version"] == "9.8.7"
    projects = _pyprojects(copy)
    assert set(projects) == DISTRIBUTIONS
    pins = 0
    for data in projects.values():
        assert data["project"]["version"] == "9.8.7"
        for dep, spec in _sibling_requirements(data, DISTRIBUTIONS):
            assert spec == "==9.8.7", f"{dep}{spec}"
            pins += 1
    assert pins == 4  # the server, both adapters and aegis-mcp pin the SDK
    # Nothing in the packages still says the old version: not a pyproject line, not a source literal.
    left = [
        str(path.relative_to(copy))
        for path in (copy / "packages").rglob("*")
        if path.suffix in {".toml", ".py"} and re.search(rf"\b{re.escape(old)}\b", path.read_text(encoding="utf-8"))
    ]
    assert left == []

    bad = subprocess.run(
        [sys.executable, str(copy / "scripts" / "bump_version.py"), "not-a-version"], capture_output=True
    )
    assert bad.returncode != 0 and b"not a version" in bad.stderr


def test_bump_script_rewrites_a_pin_with_extras(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bump_version
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    package = tmp_path / "packages" / "one"
    package.mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "aegisgov-one"\nversion = "1.0.0"\n')
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "root"\nversion = "1.0.0"\ndependencies = ["aegisgov-one[extra,other]==1.0.0"]\n'
    )
    bump_version.bump("1.1.0", root=tmp_path)
    assert '"aegisgov-one[extra,other]==1.1.0"' in (tmp_path / "pyproject.toml").read_text()
