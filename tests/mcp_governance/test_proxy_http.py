"""The proxy over streamable HTTP (`--listen`), configured by a YAML file, in front of an upstream reached over
streamable HTTP and one over stdio; and the mistakes a user can make, each one message and exit code 2."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client
from mcp_platform import AegisPlatform, free_port, recorded_runs, wait_until
from proxy_support import (
    UPSTREAM,
    Process,
    execution_status,
    governance,
    http_proxy,
    http_upstream,
    proxy_env,
    text_of,
)

from aegis_mcp._cli import main


def _write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def test_a_yaml_configured_proxy_over_http_governs_http_and_stdio_upstreams(
    platform: AegisPlatform, tmp_path: Path, run_log: Path
) -> None:
    stdio_log = tmp_path / "stdio-runs.log"
    stdio_log.touch()
    with http_upstream(run_log) as upstream_url:
        async with Client(upstream_url) as direct:
            upstream_tools = {tool.name: tool for tool in (await direct.list_tools()).tools}
        config = _write(
            tmp_path / "aegis-mcp.yaml",
            {
                "actor": {"id": "http-agent", "type": "ai-copilot"},
                "review_timeout": 5,
                "upstreams": [
                    # Both upstreams' echo and wipe are governed as mcp.echo and mcp.wipe: said explicitly, on both.
                    {
                        "name": "remote",
                        "url": upstream_url,
                        "headers": {"X-Team": "support"},
                        "capabilities": {"echo": "mcp.echo", "wipe": "mcp.wipe"},
                    },
                    {
                        "name": "local",
                        "command": sys.executable,
                        "args": [str(UPSTREAM), "--run-log", str(stdio_log)],
                        "tools": ["echo", "wipe"],
                        "tool_prefix": "local_",
                        "capabilities": {"echo": "mcp.echo", "wipe": "mcp.wipe"},
                    },
                ],
            },
        )
        with http_proxy(platform, "--config", str(config)) as (url, _):
            async with Client(url) as client:
                tools = {tool.name: tool for tool in (await client.list_tools()).tools}
                added = await client.call_tool("add", {"a": 20, "b": 22})
                wiped = await client.call_tool("wipe", {})
                echoed = await client.call_tool("local_echo", {"text": "hi"})
                local_wiped = await client.call_tool("local_wipe", {})
    remote = {name: tool for name, tool in tools.items() if not name.startswith("local_")}
    assert {n: t.model_dump() for n, t in remote.items()} == {n: t.model_dump() for n, t in upstream_tools.items()}
    assert sorted(set(tools) - set(remote)) == ["local_echo", "local_wipe"]  # the allow-list and the prefix
    assert tools["local_echo"].input_schema == upstream_tools["echo"].input_schema
    assert not added.is_error and added.structured_content == {"result": 42}
    assert governance(added)["outcome"] == "ALLOW"
    assert wiped.is_error and local_wiped.is_error
    assert not echoed.is_error and text_of(echoed) == "hi"
    assert recorded_runs(run_log) == ['add {"a": 20, "b": 22}']
    assert recorded_runs(stdio_log) == ['echo {"text": "hi"}']


def _aegis_mcp(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "aegis_mcp", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_the_command_exits_2_with_one_line_when_aegis_is_not_configured() -> None:
    done = _aegis_mcp("proxy", "--actor", "a", "--", sys.executable, str(UPSTREAM))
    assert done.returncode == 2
    assert done.stderr.startswith("aegis-mcp: missing the AEGIS endpoint") and "AEGIS_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-upstream", "no upstream"),
        ("bad-yaml", "not valid YAML"),
        ("unknown-key", "upstreams.0.comand: unknown key"),
        ("bad-listen", "--listen wants HOST:PORT"),
        ("no-such-command", "was not found"),
        ("unreachable-url", "could not be started or reached"),
        ("same-tool-twice", "set `tool_prefix`"),
    ],
)
def test_a_users_mistake_is_one_clear_message_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    monkeypatch.setenv("AEGIS_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AEGIS_API_KEY", "aegis_sk_unused")
    upstream = [sys.executable, str(UPSTREAM)]
    config = tmp_path / "aegis-mcp.yaml"
    if case == "no-upstream":
        code = main(["proxy", "--actor", "a"])
    elif case == "bad-yaml":
        config.write_text("actor: [unclosed\n", encoding="utf-8")
        code = main(["proxy", "--config", str(config)])
    elif case == "unknown-key":
        _write(config, {"actor": "a", "upstreams": [{"name": "x", "comand": "python"}]})
        code = main(["proxy", "--config", str(config)])
    elif case == "bad-listen":
        code = main(["proxy", "--actor", "a", "--listen", "8000", "--", *upstream])
    elif case == "no-such-command":
        code = main(["capabilities", "--", "no-such-mcp-server-here"])
    elif case == "unreachable-url":
        url = f"http://127.0.0.1:{free_port()}/mcp"
        _write(config, {"actor": "a", "upstreams": [{"name": "gone", "url": url}]})
        code = main(["capabilities", "--config", str(config)])
    else:
        twice = [{"name": name, "command": upstream[0], "args": upstream[1:]} for name in ("one", "two")]
        _write(config, {"actor": "a", "upstreams": twice})
        code = main(["capabilities", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 2
    assert expected in err and err.startswith("aegis-mcp: ")
    assert "Traceback" not in err and out == ""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status  # exited, not yet reaped by its (dead) parent's reaper


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("how", ["sigterm", "stdin-closed", "sigterm-http"])
def test_the_proxy_stops_its_upstreams_when_it_stops(platform: AegisPlatform, how: str) -> None:
    listen = ["--listen", f"127.0.0.1:{free_port()}"] if how.endswith("http") else []
    command = [sys.executable, "-m", "aegis_mcp", "proxy", "--actor", "a", *listen, "--", sys.executable, str(UPSTREAM)]
    process = Process(command, proxy_env(platform))
    try:
        wait_until(lambda: "governing" in "".join(process.stderr), "the proxy to start")
        upstreams = _children(process.process.pid)
        assert upstreams, "".join(process.stderr)
        if how.startswith("sigterm"):
            process.process.send_signal(signal.SIGTERM)
        else:
            assert process.process.stdin is not None
            process.process.stdin.close()
        assert process.process.wait(timeout=30) == 0, "".join(process.stderr)
        wait_until(lambda: all(_gone(pid) for pid in upstreams), "the upstream to stop", timeout=30)
        assert "Traceback" not in "".join(process.stderr)
    finally:
        process.stop()


def test_a_sigterm_flushes_the_queued_execution_reports_before_the_proxy_exits(
    platform: AegisPlatform, run_log: Path
) -> None:
    """The proxy reports in the background and leaves with os._exit on SIGTERM (no exit hooks run): it flushes
    its client's queued reports first, so the call answered just before the signal is in the audit trail. (The
    upstreams' shutdown before the flush usually gives the reporter time to send on its own: this guards the
    outcome, it cannot force a report to be still queued at the signal.)"""
    upstream = ["--", sys.executable, str(UPSTREAM), "--run-log", str(run_log)]
    with http_proxy(platform, "--actor", "sigterm-agent", *upstream) as (url, process):

        async def call() -> Any:
            async with Client(url) as client:
                added = await client.call_tool("add", {"a": 1, "b": 2})
            process.process.send_signal(signal.SIGTERM)
            return added

        added = anyio.run(call)
        assert process.process.wait(timeout=30) == 0, "".join(process.stderr)
    assert not added.is_error and governance(added)["outcome"] == "ALLOW"
    assert anyio.run(execution_status, platform, added) == "SUCCESS"


async def test_on_sigterm_the_queued_reports_are_sent_before_os_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, made certain: a report still queued (the reporter waiting to fill a batch) when the signal comes
    is on the platform before the proxy's `os._exit`."""
    import logging
    from types import SimpleNamespace

    import aegis_sdk._reporter
    from aegis_mcp import _proxy
    from aegis_sdk.testing import FakePlatform

    monkeypatch.setattr(aegis_sdk._reporter, "REPORT_LINGER", 1.0)  # the signal comes while it waits
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # would close pytest's own log handlers
    fake = FakePlatform()
    client = fake.async_client()
    decision = await client.propose({"id": "a", "type": "ai-agent"}, {"capability": "mcp.add", "parameters": {}})
    await client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")
    assert fake.executions == {}
    exits: list[tuple[int, list[str]]] = []
    async with anyio.create_task_group() as group:

        def leave(code: int) -> None:  # what os._exit would do, and what the platform had by then
            exits.append((code, list(fake.executions)))
            group.cancel_scope.cancel()

        monkeypatch.setattr(_proxy.os, "_exit", leave)
        await group.start(_proxy._until_signal, SimpleNamespace(upstreams=[], aegis=client))
        signal.raise_signal(signal.SIGTERM)
    assert exits == [(0, [decision.decision_id])]
    await client.aclose()
