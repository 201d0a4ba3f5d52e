"""Smoke test of the installed packages (run by scripts/smoke_dists.sh inside a fresh virtualenv, with
`python -I`, against the installed `aegis-server serve`; AEGIS_ENDPOINT and AEGIS_API_KEY name it).

It proves the wheels work on their own: every `aegis_*` module comes from site-packages, the four share one
version, the SDK gets the four outcomes and a confirmation round trip, a FastAPI app governed by
aegis_fastapi answers over a real uvicorn socket, a LangChain tool governed by aegis_langchain runs on
ALLOW and refuses on DENY, the installed `aegis-mcp proxy` command governs real MCP calls to the support desk
server (mcp_tools_server.py, copied next to this script) over stdio, and the audit chain verifies.
"""

# No `from __future__ import annotations`: FastAPI must see the route's Annotated alias, local to a function.
import importlib.metadata as md
import os
import socket
import sys
import threading
import time
from typing import Annotated, Any


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke failed: {what}")
    print(f"  ok  {what}")


def installed() -> None:
    import aegis_fastapi
    import aegis_langchain
    import aegis_mcp
    import aegis_sdk
    import aegis_server

    for module in (aegis_sdk, aegis_server, aegis_fastapi, aegis_langchain, aegis_mcp):
        where = str(module.__file__)
        check("site-packages" in where and sys.prefix in where, f"{module.__name__} imported from {where}")
    names = ("aegisgov-sdk", "aegisgov-server", "aegisgov-fastapi", "aegisgov-langchain", "aegisgov-mcp")
    versions = {md.version(name) for name in names}
    check(len(versions) == 1, f"one shared version {sorted(versions)}")
    modules = (aegis_sdk, aegis_server, aegis_fastapi, aegis_langchain, aegis_mcp)
    check({m.__version__ for m in modules} == versions, "every package's __version__ is its distribution's version")
    direct = sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in md.requires("aegisgov-sdk") or [])
    check(
        direct == ["httpx", "opentelemetry-api", "pydantic"],
        "aegisgov-sdk requires httpx, pydantic and opentelemetry-api",
    )


def sdk() -> None:
    from aegis_sdk import AegisClient

    with AegisClient() as aegis:
        check(aegis.health().status == "ok", "SDK: health")
        actor = {"id": "smoke-bot", "type": "ai-agent"}

        def propose(capability: str, **parameters: Any) -> Any:
            return aegis.propose(actor=actor, action={"capability": capability, "parameters": parameters})

        allowed = propose("database.query", query="SELECT 1", database="staging")
        check(allowed.outcome == "ALLOW", "SDK: a read is ALLOWed")
        record = aegis.decisions.report_execution(allowed.decision_id, status="SUCCESS", duration_ms=1.0)
        check(record.status == "SUCCESS", "SDK: execution reported")
        check(propose("database.query", query="DROP TABLE t", database="staging").outcome == "DENY", "SDK: DENY")
        escalated = propose("payments.refund", order_id="S-1", amount=5000, currency="EUR")
        check(escalated.outcome == "ESCALATE", "SDK: ESCALATE")
        asked = propose("payments.refund", order_id="S-2", amount=250, currency="EUR")
        check(asked.outcome == "REQUIRE_CONFIRMATION", "SDK: REQUIRE_CONFIRMATION")
        check(aegis.confirm(asked).parent_decision_id == asked.decision_id, "SDK: confirmed into an ALLOW")


def fastapi_adapter() -> None:
    import httpx
    import uvicorn
    from fastapi import Depends, FastAPI

    from aegis_fastapi import Aegis, Decision
    from aegis_sdk import Actor

    aegis = Aegis(actor=lambda: Actor(id="smoke-user", type="human"))
    app = aegis.install(FastAPI())
    Query = Annotated[Decision, Depends(aegis.require("database.query"))]

    @app.post("/queries")
    async def run(query: str, database: str, decision: Query) -> dict[str, Any]:
        return {"ran": query, "max_rows": decision.constraints.get("max_rows")}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    try:
        base = f"http://127.0.0.1:{port}"
        ok = httpx.post(f"{base}/queries", params={"query": "SELECT 1", "database": "staging"}, timeout=10)
        check(ok.status_code == 200 and ok.json()["max_rows"] == 1000, "FastAPI over uvicorn: ALLOW -> 200")
        no = httpx.post(f"{base}/queries", params={"query": "DROP TABLE t", "database": "staging"}, timeout=10)
        check(no.status_code == 403 and no.json()["detail"]["outcome"] == "DENY", "FastAPI over uvicorn: DENY -> 403")
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def langchain_adapter() -> None:
    from aegis_langchain import governed_tool
    from aegis_sdk import AegisClient

    with AegisClient() as aegis:

        @governed_tool("database.query", client=aegis, actor="smoke-agent")
        def query(query: str, database: str) -> str:
            """Run one SQL statement."""
            return f"ran {query}"

        check(query.invoke({"query": "SELECT 1", "database": "staging"}) == "ran SELECT 1", "LangChain: ALLOW runs")
        refused = query.invoke({"query": "DROP TABLE t", "database": "staging"})
        check("ran" not in refused and "DENY" in refused, "LangChain: DENY refuses, the model reads why")


def mcp_proxy() -> None:
    import asyncio
    from pathlib import Path

    from mcp import Client, StdioServerParameters, stdio_client

    command = Path(sys.executable).with_name("aegis-mcp")
    check(command.exists(), f"the aegis-mcp command is installed ({command})")
    upstream = Path(__file__).resolve().with_name("mcp_tools_server.py")
    arguments = ["proxy", "--actor", "smoke-mcp-assistant", "--", sys.executable, "-I", str(upstream)]
    parameters = StdioServerParameters(command=str(command), args=arguments, env=dict(os.environ))

    async def calls() -> tuple[Any, Any, Any]:
        async with Client(stdio_client(parameters)) as client:
            tools = await client.list_tools()
            allowed = await client.call_tool("lookup_order", {"order_id": "A-1001"})
            denied = await client.call_tool("delete_customer", {"customer_id": "C-42"})
            return tools, allowed, denied

    tools, allowed, denied = asyncio.run(calls())
    names = sorted(tool.name for tool in tools.tools)
    check(names == ["delete_customer", "export_customers", "lookup_order", "refund"], "MCP proxy: the upstream's tools")
    governance = (allowed.meta or {}).get("io.aegis/governance", {})
    text = " ".join(getattr(block, "text", "") for block in allowed.content)
    check(not allowed.is_error and "A-1001" in text and governance.get("outcome") == "ALLOW", "MCP proxy: ALLOW runs")
    text = " ".join(getattr(block, "text", "") for block in denied.content)
    check(denied.is_error and "denied" in text and "deleted" not in text, "MCP proxy: DENY refuses, the tool never ran")


def audit() -> None:
    from aegis_sdk import AegisClient

    with AegisClient() as aegis:
        verification = aegis.audit.verify()
        check(verification.valid and verification.records_checked > 10, "audit chain verifies")


def main() -> int:
    started = time.monotonic()
    print(f"smoke test of the installed packages (Python {sys.version.split()[0]}, {os.environ['AEGIS_ENDPOINT']})")
    installed()
    sdk()
    fastapi_adapter()
    langchain_adapter()
    mcp_proxy()
    audit()
    print(f"smoke test passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
