"""A second small upstream for the proxy tests (stdio): a tool that reports progress while it runs, so a test
can tell that the proxy forwards the upstream's progress to its own client; and a tool that tells which
environment variables the upstream process has."""

from __future__ import annotations

import os

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("progress-upstream")


@server.tool(description="Count to n, reporting progress at each step.")
async def count(n: int, ctx: Context) -> int:
    for step in range(1, n + 1):
        await ctx.report_progress(step, n, f"step {step} of {n}")
    return n


@server.tool(description="Which of these environment variables this process has.")
def environment(names: list[str]) -> dict[str, bool]:
    return {name: name in os.environ for name in names}


if __name__ == "__main__":
    server.run("stdio")
