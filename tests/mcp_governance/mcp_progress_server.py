"""A second small upstream for the proxy tests (stdio): one tool that reports progress while it runs, so a
test can tell that the proxy forwards the upstream's progress to its own client."""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("progress-upstream")


@server.tool(description="Count to n, reporting progress at each step.")
async def count(n: int, ctx: Context) -> int:
    for step in range(1, n + 1):
        await ctx.report_progress(step, n, f"step {step} of {n}")
    return n


if __name__ == "__main__":
    server.run("stdio")
