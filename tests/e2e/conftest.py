"""The backends every contract test runs against: the real aegis-server in-process (no socket) and over a
uvicorn socket, and the SDK's fake platform (`aegis_sdk.testing.FakePlatform`).

What the SDK sees cannot depend on the transport, and the fake must answer as the server does. Where the
fake honestly differs, docs/testing.md ("What the fake does not do") says so, and the test says which
difference with `@pytest.mark.not_on_fake(reason)`: it is then skipped on the fake, with that reason.
"""

from __future__ import annotations

import os
import re
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
import yaml

from aegis_sdk import AegisClient, AsyncAegisClient
from aegis_sdk.models import Capability, Policy, Proposal
from aegis_sdk.testing import DEFAULT_ENDPOINT, FakePlatform, OutcomeSpec, ScriptedOutcome
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


def _example_documents() -> tuple[list[Capability], list[Policy]]:
    capabilities: list[Capability] = []
    policies: list[Policy] = []
    for path in sorted(POLICIES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        capabilities += [Capability.model_validate(c) for c in document.get("capabilities", [])]
        if "rules" in document:
            policies.append(Policy.model_validate(document))
    return capabilities, policies


def _sql(proposal: Proposal) -> OutcomeSpec:
    """What examples/policies/sql.yaml decides (the fake runs no policy engine: its script does)."""
    query = str(proposal.action.parameters.get("query", ""))
    database = proposal.action.parameters.get("database", "production")
    if re.search(r"(?i)\b(drop|delete|truncate)\b", query):
        return ScriptedOutcome("DENY", reason="Destructive SQL (DROP, DELETE, TRUNCATE) is never run by an agent")
    writes = re.search(r"(?i)\b(insert|update|merge|alter|create|grant|revoke)\b", query)
    if writes and database == "production":
        return ScriptedOutcome("REQUIRE_CONFIRMATION", reason="Writes to production need the user's confirmation")
    if writes:
        return ScriptedOutcome("ALLOW", reason="Writes outside production are allowed")
    if re.search(r"(?i)^\s*(select|with|explain|show)\b", query):
        return ScriptedOutcome("ALLOW", reason="Read-only queries are allowed", constraints={"max_rows": 1000})
    return ScriptedOutcome("DENY", reason="DENY by default: no policy rule matched (default-deny)")


def _refund(proposal: Proposal) -> OutcomeSpec:
    """What examples/policies/payments.yaml decides."""
    amount = float(proposal.action.parameters["amount"])
    if amount <= 100:
        return ScriptedOutcome("ALLOW", reason="Small refund", constraints={"max_amount": 100})
    if amount <= 1000:
        return ScriptedOutcome("REQUIRE_CONFIRMATION", reason="Medium refund", constraints={"max_amount": 1000})
    return ScriptedOutcome("ESCALATE", reason="Large refund", review_timeout_seconds=3600)


class FakeBackend:
    """`aegis_sdk.testing.FakePlatform`, with the example capabilities and policies, and scripts that decide
    the example proposals of these tests as the example policies do."""

    endpoint = DEFAULT_ENDPOINT
    api_key = "aegis_sk_e2e_admin"

    def __init__(self) -> None:
        capabilities, policies = _example_documents()
        self.fake = FakePlatform(
            default_outcome="DENY",
            strict_capabilities=True,
            capabilities=capabilities,
            policies=policies,
            api_key=self.api_key,
            key_name="e2e-admin",
        )
        self.fake.script("database.query", _sql)
        self.fake.script("payments.refund", _refund)
        self.fake.script("deploy.production", "ESCALATE", review_timeout_seconds=2)

    def client(self, api_key: str | None = None, **kwargs: Any) -> AegisClient:
        return self.fake.client(api_key=api_key or self.api_key, **kwargs)

    def async_client(self, api_key: str | None = None, **kwargs: Any) -> AsyncAegisClient:
        return self.fake.async_client(api_key=api_key or self.api_key, **kwargs)

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        return self.fake.add_key(name, scopes=scopes)

    def raw(self, api_key: str | None = None) -> httpx.Client:
        return self.fake.http_client(headers={"Authorization": f"Bearer {api_key or self.api_key}"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "not_on_fake(reason): a documented difference of the fake platform (docs/testing.md)"
    )


@pytest.fixture(autouse=True)
def _skip_documented_fake_differences(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("not_on_fake")
    callspec = getattr(request.node, "callspec", None)
    if marker is not None and callspec is not None and callspec.params.get("backend") == "fake":
        pytest.skip(f"fake platform: {marker.args[0]}")


@pytest.fixture(scope="module", params=["inprocess", "socket", "fake"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "inprocess":
        with InProcessServer(policy_paths=[POLICIES]) as server:
            yield InProcessBackend(server)
    elif request.param == "fake":
        yield FakeBackend()
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
