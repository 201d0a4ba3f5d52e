"""The documentation site builds with warnings as errors (mkdocs.yml sets `strict: true`): every page is in
the navigation, every link and anchor resolves, every link out of docs/ names a file of the repository
(docs/_hooks/repo_links.py), and the API reference is generated from the packages' docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for page in ("quickstart", "sdk", "fastapi", "langchain", "server", "policies", "api", "troubleshooting"):
        assert (site / page / "index.html").exists(), page
    reference = (site / "reference" / "sdk-client" / "index.html").read_text(encoding="utf-8")
    assert "wait_for_review" in reference and "report_execution" in reference
