"""A misbehaving upstream MCP server for the proxy's tests (mcp's lowlevel `Server` over stdio), steered by its
environment:

- TOOLS: the tool names it lists, comma-separated (default `echo`); any name works, `a/b` and `files.write` too.
- ADD_AFTER_CALL: tool names it adds to its list after its first tool call (and says so: `list_changed`).
- HANG_LIST_WHEN: a file path; while that file exists, `tools/list` never answers.
- RUN_LOG: a file each tool run is recorded in (`tool <json arguments>`).

Its tool `hang` never answers; every other tool answers `<name> ran`."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

NAMES = [name for name in os.environ.get("TOOLS", "echo").split(",") if name]
ADDED: list[str] = []


def _record(tool: str, arguments: dict[str, Any]) -> None:
    path = os.environ.get("RUN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{tool} {json.dumps(arguments, sort_keys=True)}\n")


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    hang_when = os.environ.get("HANG_LIST_WHEN")
    if hang_when and os.path.exists(hang_when):  # noqa: ASYNC240 (a test server; one stat)
        await anyio.sleep_forever()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    tools = [types.Tool(name=name, description=f"tool {name}", input_schema=schema) for name in NAMES + ADDED]
    return types.ListToolsResult(tools=tools)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    _record(params.name, params.arguments or {})
    if params.name == "hang":
        await anyio.sleep_forever()
    extra = os.environ.get("ADD_AFTER_CALL")
    if extra and not ADDED:
        ADDED.extend(name for name in extra.split(",") if name)
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name} ran")])


async def main() -> None:
    server: Server[Any] = Server("hostile-upstream", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
