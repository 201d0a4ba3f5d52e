"""A real aegis-server on a loopback port for the MCP tests: the proxy and governed MCP servers run as their
own processes and reach it over HTTP. Started once per test session (tests/mcp_governance/conftest.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from aegis_sdk import AsyncAegisClient

POLICIES = Path(__file__).resolve().parent / "policies"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(check: object, what: str, timeout: float = 60.0) -> None:
    """Poll `check()` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class AegisPlatform:
    """`python -m aegis_server serve` with tests/mcp_governance/policies, SQLite in `folder`; keys made with the CLI."""

    def __init__(self, folder: Path, policies: Path = POLICIES) -> None:
        self.db_url = f"sqlite+aiosqlite:///{folder / 'aegis.db'}"
        self._cli("db", "upgrade")
        self.admin_key = self.create_key("mcp-admin", ["admin"])
        self.agent_key = self.create_key("mcp-agent", ["governance:propose", "governance:read"])
        self.reviewer_key = self.create_key("mcp-reviewer", ["governance:review", "governance:read"])
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "aegis_server", "serve", "--db", self.db_url, "--policy", str(policies)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._output: list[str] = []
        self._process = subprocess.Popen(
            command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=lambda: self._output.extend(self._process.stdout or []), daemon=True).start()
        deadline = time.monotonic() + 120  # a loaded CI machine starts it slowly
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"aegis-server exited early: {''.join(self._output)}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aegis-server not ready in 120 s: {''.join(self._output)}")
            time.sleep(0.05)

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "aegis_server", *args, "--db", self.db_url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        return self._cli("keys", "create", "--name", name, "--scopes", ",".join(scopes), "--actors", "*").strip()

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """AEGIS_* variables for a process that talks to this platform (the agent's key by default)."""
        return {"AEGIS_ENDPOINT": self.endpoint, "AEGIS_API_KEY": api_key or self.agent_key}

    def async_client(self, api_key: str | None = None) -> AsyncAegisClient:
        return AsyncAegisClient(endpoint=self.endpoint, api_key=api_key or self.admin_key)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.endpoint, headers={"Authorization": f"Bearer {self.admin_key}"})

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def recorded_runs(run_log: Path) -> list[str]:
    """The tool runs the test upstream recorded (`tool <json arguments>` each), oldest first."""
    return run_log.read_text(encoding="utf-8").splitlines()
