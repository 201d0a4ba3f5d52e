"""One version for every package, and exact pins between siblings (DESIGN.md, workspace rules)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _pyprojects() -> dict[str, dict]:
    found = {}
    for path in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(path.read_text())
        found[data["project"]["name"]] = data
    return found


def test_every_package_is_found() -> None:
    assert {"aegis-sdk", "aegis-server", "aegis-fastapi", "aegis-langchain"} <= set(_pyprojects())


def test_all_packages_share_one_version() -> None:
    versions = {name: data["project"]["version"] for name, data in _pyprojects().items()}
    root_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert set(versions.values()) == {root_version}, versions


def test_sibling_dependencies_are_exact_pins_on_that_version() -> None:
    projects = _pyprojects()
    names = set(projects)
    for name, data in projects.items():
        version = data["project"]["version"]
        for requirement in data["project"].get("dependencies", []):
            match = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", requirement)
            assert match
            dep, spec = match.group(1), match.group(2).strip()
            if dep in names:
                assert spec == f"=={version}", f"{name} must pin {dep}=={version}, found {requirement!r}"


def test_sdk_depends_on_httpx_and_pydantic_only() -> None:
    deps = _pyprojects()["aegis-sdk"]["project"]["dependencies"]
    assert sorted(re.match(r"[A-Za-z0-9_\-]+", d).group(0) for d in deps) == ["httpx", "pydantic"]


def test_bump_script_rewrites_versions_and_pins(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "bump_version.py", copy / "scripts")
    shutil.copy(ROOT / "pyproject.toml", copy)
    for path in (ROOT / "packages").glob("*/pyproject.toml"):
        target = copy / path.relative_to(ROOT)
        target.parent.mkdir(parents=True)
        shutil.copy(path, target)
    subprocess.run([sys.executable, str(copy / "scripts" / "bump_version.py"), "9.8.7"], check=True)
    for path in (copy / "packages").glob("*/pyproject.toml"):
        data = tomllib.loads(path.read_text())
        assert data["project"]["version"] == "9.8.7"
        for requirement in data["project"].get("dependencies", []):
            if requirement.startswith("aegis-"):
                assert requirement.endswith("==9.8.7"), requirement
    bad = subprocess.run(
        [sys.executable, str(copy / "scripts" / "bump_version.py"), "not-a-version"], capture_output=True
    )
    assert bad.returncode != 0 and b"not a version" in bad.stderr
