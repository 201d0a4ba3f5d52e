"""Set one version on every package of the workspace, on the root, and on the exact sibling pins between them.

Usage: python scripts/bump_version.py 0.2.0        (`make bump VERSION=0.2.0` runs it, then `uv lock`)

The pyproject.toml files are the only place a version is written: each package's `__version__` reads its
distribution's metadata (`aegis_sdk._version.installed_version`), so it follows after `uv sync`.
tests/workspace/test_versions.py fails when a version, a pin or a `__version__` disagrees.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["bump", "main"]

ROOT = Path(__file__).resolve().parent.parent
VERSION_RE = re.compile(r'^version = "[^"]+"$', re.MULTILINE)
NAME_RE = re.compile(r'^name = "([^"]+)"$', re.MULTILINE)
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?$")


def package_pyprojects(root: Path) -> list[Path]:
    return sorted((root / "packages").glob("*/pyproject.toml"))


def package_names(root: Path) -> list[str]:
    names = []
    for path in package_pyprojects(root):
        match = NAME_RE.search(path.read_text())
        if match:
            names.append(match.group(1))
    return names


def bump(new_version: str, root: Path = ROOT) -> list[Path]:
    """Rewrite the `[project] version` of the root and of every package, and every `"sibling==X"` pin."""
    if not SEMVER_RE.match(new_version):
        raise SystemExit(f"error: {new_version!r} is not a version like 1.2.3 or 1.2.3rc1")
    names = package_names(root)
    # A pin is `"name==X"` or `"name[extra,...]==X"` inside a TOML string.
    pin_re = re.compile(r'"(' + "|".join(map(re.escape, names)) + r')(\[[^\]"]*\])?==[^"]+"')
    changed = []
    for path in [*package_pyprojects(root), root / "pyproject.toml"]:
        text = path.read_text()
        updated = VERSION_RE.sub(f'version = "{new_version}"', text, count=1)
        updated = pin_re.sub(lambda m: f'"{m.group(1)}{m.group(2) or ""}=={new_version}"', updated)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for path in bump(argv[0]):
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
