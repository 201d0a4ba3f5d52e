"""Every Python snippet of docs/testing.md runs as written.

Snippets that define `test_*` functions are what users put in their own test files: they run under a
separate pytest process with pytest-asyncio in its default strict mode (so `@pytest.mark.asyncio` must be
there, as the page says). The other snippets are scripts and run in-process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
SCRIPTS = [s for s in SNIPPETS if "def test_" not in s]
TEST_FILES = [s for s in SNIPPETS if "def test_" in s]


def test_the_page_has_snippets_of_both_kinds() -> None:
    assert len(SCRIPTS) >= 6 and len(TEST_FILES) >= 3


@pytest.mark.parametrize("source", SCRIPTS, ids=[f"script{n}" for n in range(1, len(SCRIPTS) + 1)])
def test_script_snippet_runs(source: str) -> None:
    exec(compile(source, str(DOC), "exec"), {"__name__": "docs_testing_snippet"})


def test_test_file_snippets_pass_under_pytest(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n", encoding="utf-8")
    for number, source in enumerate(TEST_FILES, start=1):
        (tmp_path / f"test_doc_snippet_{number}.py").write_text(source, encoding="utf-8")
    expected = sum(len(re.findall(r"^(?:async )?def test_", s, flags=re.M)) for s in TEST_FILES)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{expected} passed" in result.stdout, result.stdout
