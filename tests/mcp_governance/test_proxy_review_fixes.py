"""The proxy against a hostile review: tools that would share a capability, a listener reachable by other
machines or web pages, an upstream that hangs or changes under the proxy, secrets in upstream URLs, unknown
tools, and the name of a single-command upstream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_platform import AegisPlatform, free_port, recorded_runs
from proxy_support import (
    execution_status,
    governance,
    http_proxy,
    http_upstream,
    proxy_env,
    text_of,
)

from aegis_mcp._config import config_from_arguments

HOSTILE = Path(__file__).resolve().parent / "mcp_hostile_upstream.py"
LIMIT = 60  # seconds a test waits for what the fixed proxy answers at once; before the fix it never answers


def _hostile(name: str, tools: str, **options: Any) -> dict[str, Any]:
    env = {"TOOLS": tools, **options.pop("env", {})}
    return {"name": name, "command": sys.executable, "args": [str(HOSTILE)], "env": env, **options}


def _config(path: Path, upstreams: list[dict[str, Any]], **settings: Any) -> Path:
    path.write_text(yaml.safe_dump({"actor": "review-agent", "upstreams": upstreams, **settings}), encoding="utf-8")
    return path


def _run_proxy(*arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`aegis-mcp proxy ...` with stdin closed: a proxy that starts serves stdio until EOF and exits 0."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    environ.update({"AEGIS_ENDPOINT": "http://127.0.0.1:9", "AEGIS_API_KEY": "not-used", **env})
    return subprocess.run(
        [sys.executable, "-m", "aegis_mcp", "proxy", *arguments],
        capture_output=True, text=True, env=environ, timeout=LIMIT, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _over_stdio(platform: AegisPlatform, config: Path) -> Any:
    parameters = StdioServerParameters(
        command=sys.executable, args=["-m", "aegis_mcp", "proxy", "--config", str(config)], env=proxy_env(platform)
    )
    return stdio_client(parameters)


# -- F1: two exposed tools are never governed as one capability -------------------------------------------


@pytest.mark.parametrize(
    ("upstreams", "named"),
    [
        ([_hostile("evil", "a/b,a_b")], ["'a/b'", "'a_b'", "'evil'", "mcp.a_b"]),
        (
            [_hostile("evil", "files.write"), _hostile("files", "write", capability_prefix="mcp.files")],
            ["'files.write'", "'write'", "'evil'", "'files'", "mcp.files.write"],
        ),
    ],
    ids=["same-upstream", "across-upstreams"],
)
def test_two_tools_governed_as_one_capability_stop_the_proxy_at_start(
    tmp_path: Path, upstreams: list[dict[str, Any]], named: list[str]
) -> None:
    done = _run_proxy("--config", str(_config(tmp_path / "c.yaml", upstreams)))
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert all(part in message for part in named), message
    assert "capabilities:" in message and "Traceback" not in done.stderr


async def test_an_upstream_changing_at_runtime_never_breaks_or_reroutes_the_others(
    platform: AegisPlatform, tmp_path: Path
) -> None:
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    config = _config(
        tmp_path / "c.yaml",
        [
            _hostile("a", "echo,a_b", capabilities={"echo": "mcp.echo"}, env={"RUN_LOG": str(a_log)}),
            # After its first call, b adds a second `echo` (a name a has) and `a/b` (a_b's capability) and `fresh`.
            _hostile(
                "b",
                "other",
                capabilities={"other": "mcp.fail", "fresh": "mcp.crash"},
                env={"RUN_LOG": str(b_log), "ADD_AFTER_CALL": "echo,a/b,fresh"},
            ),
        ],
    )
    with anyio.fail_after(LIMIT):
        async with Client(_over_stdio(platform, config)) as client:
            before = [tool.name for tool in (await client.list_tools()).tools]
            await client.call_tool("other", {})
            after = [tool.name for tool in (await client.list_tools()).tools]
            echoed = await client.call_tool("echo", {"text": "1"})
            colliding = await client.call_tool("a/b", {"text": "2"})
            fresh = await client.call_tool("fresh", {})
    assert before == ["echo", "a_b", "other"]
    assert after == ["echo", "a_b", "other", "fresh"]  # b's echo and a/b are left out, its new tool is listed
    assert not echoed.is_error and governance(echoed)["outcome"] == "ALLOW"
    assert recorded_runs(a_log) == ['echo {"text": "1"}']  # echo still goes to a
    assert colliding.is_error and "Unknown tool" in text_of(colliding) and governance(colliding) == {}
    assert not fresh.is_error
    assert recorded_runs(b_log) == ["other {}", "fresh {}"]


async def test_an_upstream_whose_tool_list_hangs_keeps_its_last_list(platform: AegisPlatform, tmp_path: Path) -> None:
    hang = tmp_path / "hang-now"
    config = _config(
        tmp_path / "c.yaml",
        [
            _hostile("a", "echo", capabilities={"echo": "mcp.echo"}),
            _hostile("b", "other", capabilities={"other": "mcp.fail"}, env={"HANG_LIST_WHEN": str(hang)}),
        ],
        upstream_timeout=1,
    )
    with anyio.fail_after(LIMIT):
        async with Client(_over_stdio(platform, config)) as client:
            before = [tool.name for tool in (await client.list_tools()).tools]
            hang.touch()
            during = [tool.name for tool in (await client.list_tools()).tools]
            other = await client.call_tool("other", {})
    assert before == during == ["echo", "other"]
    assert not other.is_error


# -- F3: a hung upstream ----------------------------------------------------------------------------------


async def test_a_tool_call_the_upstream_never_answers_fails_after_the_upstream_timeout(
    platform: AegisPlatform, tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "c.yaml",
        [_hostile("slow", "hang,echo", capabilities={"hang": "mcp.echo", "echo": "mcp.echo"})],
        upstream_timeout=1,
    )
    with anyio.fail_after(LIMIT):
        async with Client(_over_stdio(platform, config)) as client:
            hung = await client.call_tool("hang", {})
            echoed = await client.call_tool("echo", {"text": "after"})
    assert hung.is_error
    assert "'slow' did not answer within 1 s" in text_of(hung)
    assert governance(hung)["outcome"] == "ALLOW"
    assert await execution_status(platform, hung) == "FAILED"
    assert not echoed.is_error


# -- F8: an unknown tool is refused before governance -----------------------------------------------------


async def test_an_unknown_tool_is_refused_without_a_proposal(platform: AegisPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path / "c.yaml", [_hostile("a", "echo", capabilities={"echo": "mcp.echo"})])
    async with Client(_over_stdio(platform, config)) as client:
        unknown = await client.call_tool("deploy", {"service": "web"})  # mcp.deploy exists and ESCALATEs
    assert unknown.is_error
    assert text_of(unknown) == "Unknown tool 'deploy': the upstream MCP servers do not expose it."
    assert governance(unknown) == {}


# -- F2: the HTTP listener --------------------------------------------------------------------------------


def test_listening_beyond_loopback_without_a_token_is_refused() -> None:
    done = _run_proxy("--listen", f"0.0.0.0:{free_port()}", "--actor", "a", "--", sys.executable, str(HOSTILE))
    assert done.returncode == 2
    assert "--listen-token-env" in done.stderr and len(done.stderr.strip().splitlines()) == 1


async def test_the_http_listener_wants_the_token_and_an_allowed_host(platform: AegisPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path / "c.yaml", [_hostile("a", "echo", capabilities={"echo": "mcp.echo"})])
    options = ("--config", str(config), "--listen-token-env", "PROXY_TOKEN", "--allowed-host", "proxy.internal")
    token = "s3cret-token"
    with http_proxy(platform, *options, PROXY_TOKEN=token) as (url, _):
        port = url.split(":")[2].split("/")[0]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

        def post(**extra: str) -> int:
            return httpx.post(url, json=body, headers={**headers, **extra}, timeout=10).status_code

        no_token = post()
        wrong_token = post(Authorization="Bearer wrong")
        rebound = post(Authorization=f"Bearer {token}", Host="attacker.example")
        allowed = post(Authorization=f"Bearer {token}", Host=f"proxy.internal:{port}")
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
    assert (no_token, wrong_token) == (401, 401)
    assert rebound == 421
    assert allowed not in (401, 421)
    assert tools == ["echo"]


def test_the_allowed_hosts_follow_the_listen_address() -> None:
    from aegis_mcp._listener import allowed_hosts

    loopback, _ = allowed_hosts("127.0.0.1", 8765)
    assert {"127.0.0.1:*", "localhost:*", "[::1]:*"} <= set(loopback)
    anywhere, origins = allowed_hosts("0.0.0.0", 8765, ["proxy.internal"])
    assert "proxy.internal:*" in anywhere and "http://proxy.internal:*" in origins
    assert not any(host.startswith("0.0.0.0") for host in anywhere)
    assert not any("attacker" in host for host in anywhere)


# -- F5: secrets in an upstream URL -----------------------------------------------------------------------


def test_an_upstream_url_is_logged_without_its_credentials(platform: AegisPlatform, tmp_path: Path) -> None:
    with http_upstream(tmp_path / "runs.log") as upstream_url:
        secret_url = upstream_url.replace("http://", "http://svc:S3cretPassw0rd@") + "?api_key=TOPSECRET-123"
        config = _config(tmp_path / "c.yaml", [{"name": "tickets", "url": secret_url}])
        with http_proxy(platform, "--config", str(config)) as (_, process):
            pass
    logged = "".join(process.stderr)
    assert "connected (http: http://127.0.0.1:" in logged
    assert "S3cretPassw0rd" not in logged and "TOPSECRET" not in logged and "HTTP Request" not in logged
    from aegis_mcp._upstream import redacted_url

    assert redacted_url("https://u:p@host.example:8443/mcp?token=x#f") == "https://host.example:8443/mcp"


# -- F9: the name of a single-command upstream ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["python", "/srv/tools/server.py"], "server"),
        (["python3", "-m", "files_server"], "files_server"),
        (["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"], "server-filesystem"),
        (["uvx", "mcp-server-fetch"], "mcp-server-fetch"),
        (["/usr/local/bin/tickets-mcp"], "tickets-mcp"),
    ],
)
def test_a_single_command_upstream_is_named_after_its_script_or_package(command: list[str], name: str) -> None:
    assert config_from_arguments(actor="a", command=command).upstreams[0].name == name
