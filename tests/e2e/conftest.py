"""Two ways to reach a real aegis-server from the SDK: in-process (no socket) and over a uvicorn socket.

Every contract test runs against both, so what the SDK sees cannot depend on the transport.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from aegis_sdk import AegisClient, AsyncAegisClient
from aegis_server.inprocess import InProcessServer

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "examples" / "policies"


class Backend(Protocol):
    endpoint: str

    @property
    def api_key(self) -> str: ...
    def client(self, api_key: str | None = None, **kwargs: Any) -> AegisClient: ...
    def async_client(self, api_key: str | None = None, **kwargs: Any) -> AsyncAegisClient: ...
    def create_key(self, name: str, scopes: Sequence[str]) -> str: ...
    def raw(self, api_key: str | None = None) -> httpx.Client: ...


class InProcessBackend:
    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        self.endpoint = server.endpoint

    @property
    def api_key(self) -> str:
        return self.server.api_key

    def client(self, api_key: str | None = None, **kwargs: Any) -> AegisClient:
        return self.server.client(api_key, **kwargs)

    def async_client(self, api_key: str | None = None, **kwargs: Any) -> AsyncAegisClient:
        return self.server.async_client(api_key, **kwargs)

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        return self.server.create_key(name, scopes)

    def raw(self, api_key: str | None = None) -> httpx.Client:
        return self.server.http_client(api_key)


class SocketBackend:
    """`python -m aegis_server serve` on a free loopback port, keys made with the CLI."""

    def __init__(self, folder: Path) -> None:
        self.db_url = f"sqlite+aiosqlite:///{folder / 'aegis.db'}"
        self._cli("db", "upgrade")
        self._admin_key = self.create_key("e2e-admin", ["admin"])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "aegis_server", "serve", "--db", self.db_url, "--policy", str(POLICIES)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        self._output: list[str] = []
        self._process = subprocess.Popen(
            command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=lambda: self._output.extend(self._process.stdout or []), daemon=True).start()
        self._clients: list[Any] = []
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"aegis-server exited early: {''.join(self._output)}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aegis-server not ready in 30 s: {''.join(self._output)}")
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

    @property
    def api_key(self) -> str:
        return self._admin_key

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        return self._cli("keys", "create", "--name", name, "--scopes", ",".join(scopes), "--actors", "*").strip()

    def client(self, api_key: str | None = None, **kwargs: Any) -> AegisClient:
        client = AegisClient(endpoint=self.endpoint, api_key=api_key or self.api_key, **kwargs)
        self._clients.append(client)
        return client

    def async_client(self, api_key: str | None = None, **kwargs: Any) -> AsyncAegisClient:
        return AsyncAegisClient(endpoint=self.endpoint, api_key=api_key or self.api_key, **kwargs)

    def raw(self, api_key: str | None = None) -> httpx.Client:
        client = httpx.Client(base_url=self.endpoint, headers={"Authorization": f"Bearer {api_key or self.api_key}"})
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture(scope="module", params=["inprocess", "socket"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "inprocess":
        with InProcessServer(policy_paths=[POLICIES]) as server:
            yield InProcessBackend(server)
    else:
        env_before = os.environ.get("AEGIS_LOG_LEVEL")
        os.environ["AEGIS_LOG_LEVEL"] = "warning"
        served = SocketBackend(tmp_path_factory.mktemp("socket-backend"))
        try:
            yield served
        finally:
            served.stop()
            if env_before is None:
                os.environ.pop("AEGIS_LOG_LEVEL", None)
            else:
                os.environ["AEGIS_LOG_LEVEL"] = env_before
