"""Every Python snippet of the README, the packages' READMEs and every page of docs/ runs, as written,
against a real aegis-server.

The rules a page follows (say them again in docs/index.md's "About the snippets" if you change them):

- A fenced block labelled `python` is a complete script and is executed in a fresh namespace, with the
  repository root as working directory, against `aegis-server serve` on a free loopback port with the
  example policies (tests/docs/conftest.py). Blocks labelled anything else (`bash`, `console`, `yaml`,
  `json`, `text`) are not Python and are not run; a Python block labelled `py`, `python3` or `pycon` is an
  error, so none escapes.
- The snippets talk to `http://127.0.0.1:8000` (what `make serve` listens on) with `AEGIS_API_KEY` /
  `AEGIS_ENDPOINT` from the environment, or with the placeholder key `"aegis_sk_..."`. Here the endpoint is
  rewritten to the test server's, the placeholder key becomes a real admin key, and both variables are set
  (and `AEGIS_REVIEWER_KEY`, a reviewer's key: the key that proposed may not review its own decision).
  Nothing else in a snippet is changed.
- A snippet that starts with `# continues: needs ... from "Heading"` runs in the namespace of the first
  snippet under that heading of the same page (it is the next step of that script; a heading whose first
  snippet itself continues another shares that script's namespace).
- A snippet that cannot run on its own (it needs your application's code, an LLM service, or it serves
  forever) is marked on the line right before its fence with `<!-- not-run: the reason -->`. The marker is
  invisible on the site; the reason is required and is printed when the snippet is skipped.

docs/testing.md is the one page run elsewhere: tests/sdk/test_testing_docs.py, because its snippets are
pytest files that must run under a separate pytest process.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import DocsServer

ROOT = Path(__file__).resolve().parents[2]
DOC_ENDPOINT = "http://127.0.0.1:8000"
PLACEHOLDER_KEY = '"aegis_sk_..."'
RUN_ELSEWHERE = {"docs/testing.md": "tests/sdk/test_testing_docs.py"}

FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
CONTINUES = re.compile(r'^# continues: needs .* from "([^"]+)"')
PYTHONISH = {"py", "python3", "pycon", "py3", "ipython", "{.python}"}


def doc_pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
    pages += sorted((ROOT / "docs").rglob("*.md"))
    return [p for p in pages if p.relative_to(ROOT).as_posix() not in RUN_ELSEWHERE]


@dataclass
class Snippet:
    page: str
    line: int
    heading: str
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def continues_from(self) -> str | None:
        match = CONTINUES.match(self.code)
        return match.group(1) if match else None


def python_snippets(path: Path) -> list[Snippet]:
    """The `python` blocks of one Markdown page, with the heading they are under and their marker."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    heading, number = "", 0
    while number < len(lines):
        line = lines[number]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            number += 1
            continue
        indent, ticks, info = fence.group("indent"), fence.group("ticks"), fence.group("info").lower()
        end = number + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        body = [raw[len(indent) :] if raw.startswith(indent) else raw.lstrip() for raw in lines[number + 1 : end]]
        if info in PYTHONISH:
            raise AssertionError(f"{page}:{number + 1}: label Python blocks `python` (found {info!r}) so they are run")
        if info == "python":
            previous = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
            marker = NOT_RUN.match(previous)
            reason = marker.group("reason") if marker else None
            if marker and not reason:
                raise AssertionError(f"{page}:{number}: `<!-- not-run: -->` needs a reason")
            snippets.append(Snippet(page, number + 2, heading, "\n".join(body), reason))
        number = end + 1
    return snippets


SNIPPETS = [snippet for page in doc_pages() for snippet in python_snippets(page)]
_namespaces: dict[tuple[str, str], dict[str, Any]] = {}
_failed: set[tuple[str, str]] = set()


def test_every_page_is_covered() -> None:
    pages = {p.relative_to(ROOT).as_posix() for p in doc_pages()}
    assert {"README.md", "docs/sdk.md", "docs/server.md", "docs/fastapi.md", "docs/langchain.md"} <= pages
    for page, runner in RUN_ELSEWHERE.items():
        assert (ROOT / page).exists() and (ROOT / runner).exists(), f"{page} is run by {runner}"
    assert sum(1 for s in SNIPPETS if s.not_run is None) >= 20


@contextlib.contextmanager
def _tracer_provider_restored() -> Iterator[None]:
    """A snippet may set OpenTelemetry's global TracerProvider (docs/observability.md does, as an app would);
    the API allows that once per process, so take it away again: the next test runs without tracing."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    before = trace._TRACER_PROVIDER
    try:
        yield
    finally:
        provider = trace._TRACER_PROVIDER
        if provider is not before:
            shutdown = getattr(provider, "shutdown", None)
            if callable(shutdown):
                shutdown()
            trace._TRACER_PROVIDER = before
            trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, docs_server: DocsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    if snippet.not_run is not None:
        pytest.skip(f"{snippet.id} marked not-run: {snippet.not_run}")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("AEGIS_ENDPOINT", docs_server.endpoint)
    monkeypatch.setenv("AEGIS_API_KEY", docs_server.api_key)
    monkeypatch.setenv("AEGIS_REVIEWER_KEY", docs_server.reviewer_key)
    source = snippet.continues_from
    if source is not None:
        key = (snippet.page, source)
        assert key in _namespaces, f"{snippet.id} continues from {source!r}, which has no earlier snippet"
        assert key not in _failed, f"{snippet.id} continues from {source!r}, whose first snippet failed"
        namespace = _namespaces[key]
        _namespaces.setdefault((snippet.page, snippet.heading), namespace)  # a later step may continue from here
    else:
        namespace = {"__name__": "__main__"}
        key = (snippet.page, snippet.heading)
        _namespaces.setdefault(key, namespace)
    code = snippet.code.replace(DOC_ENDPOINT, docs_server.endpoint)
    code = code.replace(PLACEHOLDER_KEY, repr(docs_server.api_key))
    try:
        with _tracer_provider_restored():
            exec(compile(code, snippet.id, "exec"), namespace)
    except BaseException as error:
        if namespace is _namespaces.get(key):
            _failed.add(key)
        raise AssertionError(f"the snippet at {snippet.id} failed: {error!r}") from error
