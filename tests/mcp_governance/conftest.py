"""Fixtures of the aegis-mcp tests: one real aegis-server for the session, and the test upstream MCP server
(tests/mcp_governance/mcp_upstream_server.py) as a command line."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp_platform import AegisPlatform
from mw_support import MIDDLEWARE_CLIENTS

UPSTREAM = Path(__file__).resolve().parent / "mcp_upstream_server.py"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AegisPlatform]:
    aegis = AegisPlatform(tmp_path_factory.mktemp("aegis-mcp-platform"))
    try:
        yield aegis
    finally:
        aegis.stop()


@pytest.fixture(autouse=True)
async def _close_middleware_clients() -> AsyncIterator[None]:
    """Close the middleware clients of the test (flushing their queued execution reports) on its event loop."""
    yield
    while MIDDLEWARE_CLIENTS:
        await MIDDLEWARE_CLIENTS.pop().aclose()


@pytest.fixture
def run_log(tmp_path: Path) -> Path:
    """The file the test upstream records each tool run in (`recorded_runs(run_log)` reads it)."""
    path = tmp_path / "upstream-runs.log"
    path.touch()
    return path


@pytest.fixture
def upstream_command(run_log: Path) -> list[str]:
    """The test upstream over stdio, as a command line; it records its runs in `run_log`."""
    return [sys.executable, str(UPSTREAM), "--run-log", str(run_log)]
