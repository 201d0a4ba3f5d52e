"""What the second hostile review of the proxy found: the listener's token handed to upstreams, `--replace`
dropping `x-sensitive` marks inside unions, a lower-case `bearer` refused, other spellings of "every interface"."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client, StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform
from proxy_support import proxy_env

from aegis_mcp._capabilities import PlannedCapability, sync
from aegis_mcp._listener import _BearerToken, allowed_hosts

PROGRESS_UPSTREAM = Path(__file__).resolve().parent / "mcp_progress_server.py"


async def test_the_listeners_token_never_reaches_an_upstream(platform: AegisPlatform, tmp_path: Path) -> None:
    config = tmp_path / "aegis-mcp.yaml"
    upstream = {
        "name": "environment",
        "command": sys.executable,
        "args": [str(PROGRESS_UPSTREAM)],
        "capabilities": {"environment": "mcp.echo"},
    }
    settings = {"actor": "env-agent", "listen_token_env": "MY_LISTEN_TOKEN", "upstreams": [upstream]}
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    env = proxy_env(platform, MY_LISTEN_TOKEN="listener-secret", OTHER="1")
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "aegis_mcp", "proxy", "--config", str(config)], env=env
    )
    async with Client(stdio_client(server)) as client:
        result = await client.call_tool("environment", {"names": ["MY_LISTEN_TOKEN", "OTHER"]})
    assert result.structured_content == {"MY_LISTEN_TOKEN": False, "OTHER": True}


def _union_schema(marked: bool) -> dict[str, Any]:
    card: dict[str, Any] = {"type": "string", **({"x-sensitive": True} if marked else {})}
    return {
        "type": "object",
        "properties": {
            "payment": {
                "anyOf": [
                    {"type": "object", "properties": {"card": card}},
                    {"type": "object", "properties": {"iban": {"type": "string"}}},
                ]
            }
        },
    }


async def test_replace_keeps_the_sensitive_marks_inside_unions(platform: AegisPlatform) -> None:
    name = "mcp.second_review_pay"
    async with platform.async_client() as admin:
        await admin.capabilities.create({"name": name, "risk_level": "high", "parameter_schema": _union_schema(True)})
        planned = PlannedCapability("pay", "shop", name, "Pay.", "medium", _union_schema(False))
        (outcome,) = await sync(admin, [planned], replace=True)
        stored = await admin.capabilities.get(name)
    assert outcome.status == "replaced"
    assert stored.risk_level == "high"
    card = stored.parameter_schema["properties"]["payment"]["anyOf"][0]["properties"]["card"]
    assert card.get("x-sensitive") is True


async def test_replace_never_drops_a_mark_it_cannot_place(platform: AegisPlatform) -> None:
    """The tool's schema has another shape where the operator marked a value: the capability is left alone."""
    name = "mcp.second_review_pin"
    marked = {"type": "object", "properties": {"pin": {"oneOf": [{"type": "string", "x-sensitive": True}]}}}
    reshaped = {"type": "object", "properties": {"pin": {"type": "string"}}}
    async with platform.async_client() as admin:
        await admin.capabilities.create({"name": name, "risk_level": "high", "parameter_schema": marked})
        planned = PlannedCapability("pin", "shop", name, "", "high", reshaped)
        (outcome,) = await sync(admin, [planned], replace=True)
        stored = await admin.capabilities.get(name)
    assert outcome.status == "differs" and "x-sensitive" in (outcome.message or "")
    assert stored.parameter_schema == marked


async def _status_with(authorization: bytes) -> int:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"authorization", authorization)]}
    await _BearerToken(app, "s3cret")(scope, None, send)
    status: int = sent[0]["status"]
    return status


def test_the_bearer_scheme_is_case_insensitive_and_the_token_exact() -> None:
    assert anyio.run(_status_with, b"bearer s3cret") == 200
    assert anyio.run(_status_with, b"BEARER s3cret") == 200
    assert anyio.run(_status_with, b"Bearer s3cre") == 401
    assert anyio.run(_status_with, b"Basic s3cret") == 401
    assert anyio.run(_status_with, b"s3cret") == 401


def test_every_spelling_of_every_interface_accepts_localhost() -> None:
    for address in ("0.0.0.0", "::", "::0", "0:0:0:0:0:0:0:0"):
        hosts, _ = allowed_hosts(address, 8765)
        assert "localhost" in hosts and "127.0.0.1" in hosts, address
