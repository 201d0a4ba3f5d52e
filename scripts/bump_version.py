"""Set one version on every package of the workspace and on the exact sibling pins between them.

Usage: python scripts/bump_version.py 0.2.0
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION_RE = re.compile(r'^version = "[^"]+"$', re.MULTILINE)
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?$")


def package_pyprojects() -> list[Path]:
    return sorted((ROOT / "packages").glob("*/pyproject.toml"))


def package_names() -> list[str]:
    names = []
    for path in package_pyprojects():
        match = re.search(r'^name = "([^"]+)"$', path.read_text(), re.MULTILINE)
        if match:
            names.append(match.group(1))
    return names


def bump(new_version: str) -> list[Path]:
    if not SEMVER_RE.match(new_version):
        raise SystemExit(f"error: {new_version!r} is not a version like 1.2.3 or 1.2.3rc1")
    names = package_names()
    pin_re = re.compile(r'"(' + "|".join(map(re.escape, names)) + r')==[^"]+"')
    changed = []
    for path in [*package_pyprojects(), ROOT / "pyproject.toml"]:
        text = path.read_text()
        updated = VERSION_RE.sub(f'version = "{new_version}"', text, count=1)
        updated = pin_re.sub(lambda m: f'"{m.group(1)}=={new_version}"', updated)
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
    print("now run: uv lock")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
