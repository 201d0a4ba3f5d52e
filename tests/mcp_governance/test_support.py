"""The test support itself: the upstream answers over stdio, its runs are recorded, the platform decides."""

from __future__ import annotations

from pathlib import Path

from mcp import Client, StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform, recorded_runs


async def test_upstream_over_stdio_records_its_runs(upstream_command: list[str], run_log: Path) -> None:
    server = StdioServerParameters(command=upstream_command[0], args=upstream_command[1:])
    async with Client(stdio_client(server)) as client:
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert names == ["add", "crash", "deploy", "echo", "fail", "refund", "wipe"]
    assert not result.is_error
    assert recorded_runs(run_log) == ['add {"a": 2, "b": 3}']


async def test_platform_decides_the_upstream_tools(platform: AegisPlatform) -> None:
    async with platform.async_client(platform.agent_key) as aegis:
        wipe = await aegis.propose({"id": "t", "type": "ai-agent"}, {"capability": "mcp.wipe"})
        add = await aegis.propose(
            {"id": "t", "type": "ai-agent"}, {"capability": "mcp.add", "parameters": {"a": 1, "b": 2}}
        )
    assert (wipe.outcome, add.outcome) == ("DENY", "ALLOW")
