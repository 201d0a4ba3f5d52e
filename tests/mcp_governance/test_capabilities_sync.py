"""`aegis-mcp capabilities [--sync]` and `aegis-mcp proxy --sync-capabilities`: the upstream's tools registered
as capabilities (name, description, risk level, input schema), against the real aegis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mcp import Client, StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform
from proxy_support import proxy_over_stdio


def _capabilities(platform: AegisPlatform | None, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    if platform is not None:
        env.update(platform.env(platform.admin_key))
    return subprocess.run(
        [sys.executable, "-m", "aegis_mcp", "capabilities", *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_without_sync_it_shows_what_would_be_registered(upstream_command: list[str]) -> None:
    done = _capabilities(None, "--json", "--risk-level", "low", "--capability-prefix", "files", "--", *upstream_command)
    assert done.returncode == 0, done.stderr
    planned = {item["name"]: item for item in json.loads(done.stdout)}
    assert sorted(planned) == [f"files.{t}" for t in ("add", "crash", "deploy", "echo", "fail", "refund", "wipe")]
    assert planned["files.add"]["description"] == "Add two integers."
    assert planned["files.add"]["risk_level"] == "low"
    assert planned["files.add"]["parameter_schema"]["required"] == ["a", "b"]


async def test_sync_creates_then_leaves_unchanged_then_reports_differs_then_replaces(
    platform: AegisPlatform, upstream_command: list[str], tmp_path: Path
) -> None:
    async with Client(
        stdio_client(StdioServerParameters(command=upstream_command[0], args=upstream_command[1:]))
    ) as direct:
        schemas = {tool.name: tool.input_schema for tool in (await direct.list_tools()).tools}
    config = tmp_path / "aegis-mcp.yaml"
    upstream = {"name": "tests", "command": upstream_command[0], "args": upstream_command[1:], "tools": ["add", "echo"]}
    config.write_text(yaml.safe_dump({"actor": "a", "capability_prefix": "synced", "upstreams": [upstream]}))
    arguments = ["--sync", "--json", "--config", str(config)]
    runs = [_capabilities(platform, *arguments) for _ in range(2)]
    runs.append(_capabilities(platform, "--risk-level", "high", *arguments))
    async with platform.async_client() as aegis:
        left = await aegis.capabilities.get("synced.add")
    runs.append(_capabilities(platform, "--risk-level", "high", "--replace", *arguments))
    for done in runs:
        assert done.returncode == 0, done.stderr
    statuses = [{item["capability"]: item["status"] for item in json.loads(done.stdout)} for done in runs]
    assert statuses[0] == {"synced.add": "created", "synced.echo": "created"}  # only the allow-listed tools
    assert set(statuses[1].values()) == {"unchanged"}
    assert set(statuses[2].values()) == {"differs"}  # without --replace, an existing capability is left
    assert "risk_level" in json.loads(runs[2].stdout)[0]["message"]
    assert left.risk_level == "medium"
    assert set(statuses[3].values()) == {"replaced"}
    async with platform.async_client() as aegis:
        add = await aegis.capabilities.get("synced.add")
    assert add.parameter_schema == schemas["add"]
    assert (add.description, add.risk_level) == ("Add two integers.", "high")


async def test_sync_never_lowers_an_operators_protections(
    platform: AegisPlatform, upstream_command: list[str], tmp_path: Path
) -> None:
    # The operator registered guarded.echo at risk high with its text marked x-sensitive (the audit keeps a hash).
    operator = {
        "name": "guarded.echo",
        "description": "the operator's own words",
        "risk_level": "high",
        "parameter_schema": {"type": "object", "properties": {"text": {"type": "string", "x-sensitive": True}}},
    }
    async with platform.async_client() as aegis:
        await aegis.capabilities.create(operator)
    config = tmp_path / "aegis-mcp.yaml"
    upstream = {"name": "tests", "command": upstream_command[0], "args": upstream_command[1:], "tools": ["echo"]}
    config.write_text(yaml.safe_dump({"actor": "a", "capability_prefix": "guarded", "upstreams": [upstream]}))
    plain = _capabilities(platform, "--sync", "--json", "--config", str(config))
    async with platform.async_client() as aegis:
        after_plain = (await aegis.capabilities.get("guarded.echo")).model_dump()
    replaced = _capabilities(platform, "--sync", "--replace", "--json", "--risk-level", "low", "--config", str(config))
    async with platform.async_client() as aegis:
        after_replace = await aegis.capabilities.get("guarded.echo")
    assert plain.returncode == replaced.returncode == 0, plain.stderr + replaced.stderr
    assert json.loads(plain.stdout)[0]["status"] == "differs"
    assert after_plain == operator
    assert json.loads(replaced.stdout)[0]["status"] == "replaced"
    assert after_replace.description == "Echo a text back."  # the tool's own description and schema
    assert after_replace.risk_level == "high"  # never lowered
    assert after_replace.parameter_schema["properties"]["text"]["x-sensitive"] is True
    assert after_replace.parameter_schema["required"] == ["text"]


def test_a_capability_the_server_refuses_is_reported_with_the_tool_and_the_reason(
    platform: AegisPlatform, upstream_command: list[str]
) -> None:
    # mcp.* are defined in the test policy files: the server refuses to replace them through the API.
    done = _capabilities(platform, "--sync", "--replace", "--risk-level", "critical", "--", *upstream_command)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith("failed")}
    assert "mcp.add" in lines and "(tool add)" in lines["mcp.add"] and "policy file" in lines["mcp.add"]


async def test_the_proxy_registers_the_tools_at_start_when_asked(
    platform: AegisPlatform, upstream_command: list[str]
) -> None:
    server = proxy_over_stdio(
        platform, upstream_command, "--sync-capabilities", "--capability-prefix", "atstart",
        AEGIS_API_KEY=platform.admin_key,
    )  # fmt: skip
    async with Client(server) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    async with platform.async_client() as aegis:
        registered = {c.name for c in await aegis.capabilities.list()}
    assert {f"atstart.{name}" for name in names} <= registered


async def test_the_proxy_at_start_creates_missing_capabilities_and_never_replaces(
    platform: AegisPlatform, upstream_command: list[str]
) -> None:
    async with platform.async_client() as aegis:
        await aegis.capabilities.create({"name": "keep.echo", "description": "mine", "risk_level": "critical"})
    server = proxy_over_stdio(
        platform, upstream_command, "--sync-capabilities", "--capability-prefix", "keep",
        AEGIS_API_KEY=platform.admin_key,
    )  # fmt: skip
    async with Client(server) as client:
        await client.list_tools()
    async with platform.async_client() as aegis:
        echo = await aegis.capabilities.get("keep.echo")
        add = await aegis.capabilities.get("keep.add")
    assert (echo.description, echo.risk_level) == ("mine", "critical")
    assert add.description == "Add two integers."
