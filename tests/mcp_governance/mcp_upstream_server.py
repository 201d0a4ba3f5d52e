"""A real MCP server for the tests (mcp's `MCPServer`), run as its own process: over stdio by default, over
streamable HTTP with `--http PORT`. With `--run-log PATH` its tools record each run in that file (one line per
run: `tool <json arguments>`), so a test can tell whether the upstream saw a call.

With `--govern` it governs its own tools with `aegis_mcp.GovernanceMiddleware` (the server-author path),
configured by AEGIS_ENDPOINT / AEGIS_API_KEY and `--actor`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from mcp.server.mcpserver import MCPServer

RUN_LOG: str | None = None


def _record(tool: str, arguments: dict[str, Any]) -> None:
    path = RUN_LOG
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{tool} {json.dumps(arguments, sort_keys=True)}\n")


def build(middleware: list[Any] | None = None) -> MCPServer:
    server = MCPServer("test-upstream", instructions="Tools for the aegis-mcp tests.", middleware=middleware)

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        _record("add", {"a": a, "b": b})
        return a + b

    @server.tool(description="Echo a text back.")
    def echo(text: str) -> str:
        _record("echo", {"text": text})
        return text

    @server.tool(description="Delete everything.")
    def wipe() -> str:
        _record("wipe", {})
        return "wiped"

    @server.tool(description="Refund an amount to the customer.")
    def refund(amount: float) -> str:
        _record("refund", {"amount": amount})
        return f"refunded {amount}"

    @server.tool(description="Deploy the service.")
    def deploy(service: str = "web") -> str:
        _record("deploy", {"service": service})
        return f"deployed {service}"

    @server.tool(description="Always fails.")
    def fail() -> str:
        _record("fail", {})
        raise ValueError("the tool failed on purpose")

    @server.tool(description="Kills the server process.")
    def crash() -> str:
        _record("crash", {})
        os._exit(3)

    @server.resource("note://welcome", description="A welcome note.")
    def welcome() -> str:
        return "Welcome to the test upstream."

    @server.prompt(description="Greet someone.")
    def greet(name: str) -> str:
        return f"Say hello to {name}."

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on this loopback port")
    parser.add_argument("--govern", action="store_true", help="govern the tools with GovernanceMiddleware")
    parser.add_argument("--actor", default="upstream-agent")
    parser.add_argument("--run-log", default=None, help="record each tool run in this file")
    args = parser.parse_args()
    global RUN_LOG
    RUN_LOG = args.run_log
    middleware: list[Any] = []
    if args.govern:
        from aegis_mcp import GovernanceMiddleware
        from aegis_sdk import AsyncAegisClient

        middleware.append(GovernanceMiddleware(AsyncAegisClient(), actor=args.actor, review_timeout=2.0))
    server = build(middleware)
    if args.http is not None:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
