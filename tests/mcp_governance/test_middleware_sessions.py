"""The server-author path in real processes: the test upstream started with `--govern` (GovernanceMiddleware on
its MCPServer, AEGIS_ENDPOINT / AEGIS_API_KEY from the platform), reached by the SDK's `Client` over stdio and
over streamable HTTP, in both eras."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import UPSTREAM
from mcp import Client, StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform, free_port, recorded_runs, wait_until
from mw_support import ACCEPT, DECLINE, MODES, Answers, meta_of, text_of

pytestmark = pytest.mark.parametrize("mode", MODES)


async def outcomes(client: Client) -> dict[str, Any]:
    return {
        "add": await client.call_tool("add", {"a": 2, "b": 3}),
        "wipe": await client.call_tool("wipe", {}),
        "refund": await client.call_tool("refund", {"amount": 7}),
    }


def check(results: dict[str, Any], run_log: Path) -> None:
    assert not results["add"].is_error and text_of(results["add"]) == "5"
    assert meta_of(results["add"])["outcome"] == "ALLOW"
    assert results["wipe"].is_error and meta_of(results["wipe"])["refused"] == "denied"
    assert not results["refund"].is_error and text_of(results["refund"]) == "refunded 7.0"
    assert recorded_runs(run_log) == ['add {"a": 2, "b": 3}', 'refund {"amount": 7.0}']


async def test_governed_over_stdio(platform: AegisPlatform, run_log: Path, mode: Any) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=[str(UPSTREAM), "--govern", "--run-log", str(run_log)],
        env={**os.environ, **platform.env()},
    )
    async with Client(stdio_client(server), mode=mode, elicitation_callback=Answers(ACCEPT)) as client:
        check(await outcomes(client), run_log)


@pytest.fixture
def governed_url(platform: AegisPlatform, run_log: Path) -> Iterator[str]:
    """The test upstream with `--govern`, serving streamable HTTP in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--govern", "--http", str(port), "--run-log", str(run_log)],
        env={**os.environ, **platform.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return True
        except httpx.TransportError:
            return False

    try:
        wait_until(up, "the governed upstream over HTTP")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_governed_over_streamable_http(governed_url: str, run_log: Path, mode: Any) -> None:
    url = governed_url
    async with Client(url, mode=mode, elicitation_callback=Answers(ACCEPT)) as client:
        check(await outcomes(client), run_log)
    async with Client(url, mode=mode, elicitation_callback=Answers(DECLINE)) as client:
        declined = await client.call_tool("refund", {"amount": 8})
    async with Client(url, mode=mode) as client:
        unsupported = await client.call_tool("refund", {"amount": 9})
    assert declined.is_error and meta_of(declined)["refused"] == "confirmation_declined"
    assert unsupported.is_error and meta_of(unsupported)["refused"] == "confirmation_unavailable"
    assert len(recorded_runs(run_log)) == 2
