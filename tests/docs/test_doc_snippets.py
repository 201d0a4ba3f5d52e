"""Every Python snippet of docs/sdk.md runs, as written, against a real aegis-server.

The guide's snippets talk to `http://127.0.0.1:8000` with `AEGIS_API_KEY` from the environment, as a
user running `make serve` would. Here the server listens on a free port instead, so the endpoint is
rewritten and nothing else. A snippet that starts with `# continues: needs ... from "Heading"` runs in
the namespace of the first snippet under that heading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import SocketBackend

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_ENDPOINT = "http://127.0.0.1:8000"
CONTINUES = re.compile(r'^# continues: needs .* from "([^"]+)"')


@dataclass
class Snippet:
    heading: str
    line: int
    code: str

    @property
    def continues_from(self) -> str | None:
        match = CONTINUES.match(self.code)
        return match.group(1) if match else None


def python_snippets(path: Path) -> list[Snippet]:
    snippets, heading, block, start = [], "", None, 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if block is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif block is None and line.strip() == "```python":
            block, start = [], number + 1
        elif block is not None and line.strip() == "```":
            snippets.append(Snippet(heading, start, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
    return snippets


SDK_SNIPPETS = python_snippets(DOCS / "sdk.md")


def test_the_guide_has_snippets() -> None:
    assert len(SDK_SNIPPETS) >= 10


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketBackend]:
    backend = SocketBackend(tmp_path_factory.mktemp("docs-server"))
    try:
        yield backend
    finally:
        backend.stop()


def test_every_sdk_guide_snippet_runs(served: SocketBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_API_KEY", served.api_key)
    namespaces: dict[str, dict[str, Any]] = {}
    for snippet in SDK_SNIPPETS:
        source = snippet.continues_from
        if source is not None:
            assert source in namespaces, f"docs/sdk.md:{snippet.line} continues from unknown heading {source!r}"
            namespace = namespaces[source]
        else:
            namespace = {"__name__": "__main__"}
            namespaces.setdefault(snippet.heading, namespace)
        code = compile(snippet.code.replace(DOC_ENDPOINT, served.endpoint), f"docs/sdk.md:{snippet.line}", "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"the snippet at docs/sdk.md:{snippet.line} failed: {error!r}") from error
