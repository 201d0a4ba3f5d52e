"""Check what `make dist` built: a wheel and an sdist of each of the five packages, one shared version,
and complete metadata (description, README, license file, classifiers, requires-python, project URLs,
the py.typed marker), exact pins between siblings, aegisgov-sdk depending on httpx, pydantic and
opentelemetry-api only, and aegisgov-mcp's promises (the `aegis-mcp` command, Python >=3.10, the mcp 2.x SDK).
The distributions are named aegisgov-* (the index's aegis-sdk and aegis-langchain belong to other projects);
their import packages keep the aegis_* names.

    python scripts/check_dists.py [DIST_DIR]      # default: dist/

Exit 0 and one line per artifact when everything holds; otherwise exit 1 listing every problem.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

# distribution name -> import package
PACKAGES = {
    "aegisgov-sdk": "aegis_sdk",
    "aegisgov-server": "aegis_server",
    "aegisgov-fastapi": "aegis_fastapi",
    "aegisgov-langchain": "aegis_langchain",
    "aegisgov-mcp": "aegis_mcp",
}
# What a wheel's entry_points.txt must declare, per distribution.
CONSOLE_SCRIPTS = {
    "aegisgov-server": "aegis-server = aegis_server.cli:main",
    "aegisgov-mcp": "aegis-mcp = aegis_mcp._cli:main",
}
ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.\-]+", requirement)
    return match.group(0).lower().replace("_", "-") if match else requirement


def check_metadata(label: str, meta: Message, body: str, version: str, problems: list[str]) -> None:
    def need(condition: bool, what: str) -> None:
        if not condition:
            problems.append(f"{label}: {what}")

    need(meta["Version"] == version, f"version {meta['Version']} differs from the shared {version}")
    need(bool(meta["Summary"]) and len(meta["Summary"]) > 20, "no description (Summary)")
    need(meta["Description-Content-Type"] == "text/markdown" and len(body) > 200, "no Markdown README")
    need("](../" not in body and "](./" not in body, "README has relative links, which are broken on PyPI")
    need(meta["License-Expression"] == "Apache-2.0", "no License-Expression: Apache-2.0")
    need("LICENSE" in (meta.get_all("License-File") or []), "no License-File: LICENSE")
    need(bool(meta["Requires-Python"]), "no Requires-Python")
    classifiers = meta.get_all("Classifier") or []
    need("Typing :: Typed" in classifiers, "no 'Typing :: Typed' classifier")
    need(any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers), "no Python classifiers")
    need(any(c.startswith("Development Status") for c in classifiers), "no Development Status classifier")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    need({"Documentation", "Source", "Changelog"} <= set(urls), f"project URLs incomplete: {sorted(urls)}")
    requires = meta.get_all("Requires-Dist") or []
    for requirement in requires:
        if _name(requirement) in PACKAGES:
            need(f"=={version}" in requirement, f"sibling requirement not pinned to =={version}: {requirement}")
    need(meta["Name"] in PACKAGES, f"distribution name {meta['Name']!r} is not one of {sorted(PACKAGES)}")
    if meta["Name"] == "aegisgov-sdk":
        direct = sorted({_name(r) for r in requires if "extra ==" not in r})
        need(
            direct == ["httpx", "opentelemetry-api", "pydantic"],
            f"aegisgov-sdk must depend on httpx, pydantic and opentelemetry-api only, found {direct}",
        )
    if meta["Name"] == "aegisgov-mcp":
        # The SDK and the adapters promise 3.10; aegis-mcp is built on the mcp 2.x server API (not 1.x's).
        need(
            meta["Requires-Python"] == ">=3.10",
            f"aegisgov-mcp must require Python >=3.10, found {meta['Requires-Python']}",
        )
        mcp = [r.replace(" ", "") for r in requires if _name(r) == "mcp"]
        need(mcp in (["mcp<3,>=2.0"], ["mcp>=2.0,<3"]), f"aegisgov-mcp must require mcp>=2.0,<3, found {mcp}")


def main(argv: list[str]) -> int:
    dist = Path(argv[1] if len(argv) > 1 else ROOT / "dist")
    problems: list[str] = []
    versions: set[str] = set()
    for name, module in PACKAGES.items():
        stem = name.replace("-", "_")  # the file names' form of the distribution name
        wheels = sorted(dist.glob(f"{stem}-*.whl"))
        sdists = sorted(dist.glob(f"{stem}-*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            found = f"{len(wheels)} and {len(sdists)}"
            problems.append(f"{name}: expected one wheel and one sdist in {dist}, found {found}")
            continue
        version = wheels[0].name.split("-")[1]
        versions.add(version)
        with zipfile.ZipFile(wheels[0]) as wheel:
            files = set(wheel.namelist())
            info = f"{stem}-{version}.dist-info"
            meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
            body = meta.get_payload() if isinstance(meta.get_payload(), str) else ""
            check_metadata(wheels[0].name, meta, str(body), version, problems)
            for required in (f"{module}/py.typed", f"{module}/__init__.py", f"{info}/licenses/LICENSE"):
                if required not in files:
                    problems.append(f"{wheels[0].name}: {required} missing")
            if name in CONSOLE_SCRIPTS:
                entry_points = (
                    wheel.read(f"{info}/entry_points.txt").decode() if f"{info}/entry_points.txt" in files else ""
                )
                scripts = entry_points.split("[console_scripts]", 1)[-1].split("[", 1)[0] if entry_points else ""
                lines = {line.replace(" ", "") for line in scripts.splitlines()}
                if CONSOLE_SCRIPTS[name].replace(" ", "") not in lines:
                    problems.append(
                        f"{wheels[0].name}: no console script `{CONSOLE_SCRIPTS[name]}` in entry_points.txt"
                    )
        with tarfile.open(sdists[0]) as sdist:
            top = f"{stem}-{version}"
            members = set(sdist.getnames())
            for required in ("PKG-INFO", "pyproject.toml", "README.md", "LICENSE", f"src/{module}/py.typed"):
                if f"{top}/{required}" not in members:
                    problems.append(f"{sdists[0].name}: {required} missing")
            pkg_info = sdist.extractfile(f"{top}/PKG-INFO")
            if pkg_info is not None:
                meta = Parser().parsestr(pkg_info.read().decode())
                check_metadata(sdists[0].name, meta, str(meta.get_payload()), version, problems)
        print(f"ok: {wheels[0].name}, {sdists[0].name}")
    if len(versions) > 1:
        problems.append(f"the packages do not share one version: {sorted(versions)}")
    stems = tuple(name.replace("-", "_") + "-" for name in PACKAGES)
    extra = sorted(p.name for p in dist.iterdir() if not p.name.startswith(stems))
    extra = [e for e in extra if e != ".gitignore"]
    if extra:
        problems.append(f"unexpected files in {dist}: {extra}")
    if problems:
        print(f"\n{len(problems)} problem(s) in {dist}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"ok: {len(PACKAGES)} wheels and {len(PACKAGES)} sdists, version {versions.pop()}, metadata complete")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
