"""The governing proxy as the tests run it: `python -m aegis_mcp proxy ...` as its own process, reached with the
mcp SDK's `Client` over stdio (the proxy started by the client) or over streamable HTTP (`--listen`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform, free_port
from mcp_types import CallToolResult, ElicitResult

from aegis_mcp import META_KEY

ACTOR = "proxy-agent"
UPSTREAM = Path(__file__).resolve().parent / "mcp_upstream_server.py"


def proxy_args(upstream: Sequence[str], *options: str) -> list[str]:
    return ["-m", "aegis_mcp", "proxy", "--actor", ACTOR, *options, "--", *upstream]


def proxy_env(platform: AegisPlatform | None, **extra: str) -> dict[str, str]:
    """The proxy's environment: AEGIS_* of the platform (no retries: a closed port fails at once)."""
    env = {"AEGIS_RETRIES": "0", "PYTHONUNBUFFERED": "1"}
    if platform is not None:
        env.update(platform.env())
    env.update(extra)
    return env


StdioTransport = AbstractAsyncContextManager[Any]
"""What `Client(...)` takes for a server it starts: `stdio_client(parameters)` (mcp 2.0 takes no parameters)."""


def proxy_over_stdio(
    platform: AegisPlatform | None, upstream: Sequence[str], *options: str, **env: str
) -> StdioTransport:
    """The proxy as a stdio server the `Client` starts."""
    parameters = StdioServerParameters(
        command=sys.executable, args=proxy_args(upstream, *options), env=proxy_env(platform, **env)
    )
    return stdio_client(parameters)


def governance(result: CallToolResult) -> dict[str, Any]:
    meta = result.meta or {}
    found: dict[str, Any] = meta.get(META_KEY) or {}
    return found


async def execution_status(platform: AegisPlatform, result: CallToolResult) -> str | None:
    """The execution status AEGIS recorded for the decision behind `result` (from its audit trail)."""
    async with platform.async_client() as aegis:
        trail = await aegis.audit.trail(governance(result)["decision_id"])
    statuses = [record.payload.get("status") for record in trail.records if "execution" in record.event_type]
    return statuses[-1] if statuses else None


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def answering(action: str, confirm: bool = True) -> Any:
    """An elicitation callback that answers every question with `action` (and records the questions)."""
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        content = {"confirm": confirm} if action == "accept" else None
        return ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    elicit.asked = asked  # type: ignore[attr-defined]
    return elicit


class Process:
    """A process whose output is collected (stdout and stderr apart) while it runs."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.process = subprocess.Popen(
            list(command),
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=lambda: self.stdout.extend(self.process.stdout or []), daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr or []), daemon=True).start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_http(url: str, process: Process, timeout: float = 60.0) -> None:
    """Wait until an MCP streamable HTTP endpoint answers (any HTTP status), or the process died."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if process.process.poll() is not None:
            raise AssertionError(f"the process exited early: {''.join(process.stderr)}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in {timeout} s: {''.join(process.stderr)}")
        time.sleep(0.05)


@contextmanager
def http_upstream(run_log: Path) -> Iterator[str]:
    """The test upstream over streamable HTTP; yields its URL."""
    port = free_port()
    process = Process([sys.executable, str(UPSTREAM), "--http", str(port), "--run-log", str(run_log)])
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_http(url, process)
        yield url
    finally:
        process.stop()


@contextmanager
def http_proxy(platform: AegisPlatform, *arguments: str, **env: str) -> Iterator[tuple[str, Process]]:
    """`aegis-mcp proxy --listen 127.0.0.1:PORT ...` as a process; yields its URL and the process."""
    port = free_port()
    command = [sys.executable, "-m", "aegis_mcp", "proxy", "--listen", f"127.0.0.1:{port}", *arguments]
    process = Process(command, proxy_env(platform, **env))
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_http(url, process)
        yield url, process
    finally:
        process.stop()
