"""Fixtures for the policy-version tests: the app in-process (background tasks off) on a SQLite file, or on
any store URL, with the policies of `policies.yaml` copied into tmp_path (tests edit the copy), an admin
client, and helpers for the API items the tests save."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).with_name("policies.yaml")

ServerFactory = Callable[..., InProcessServer]

EMAIL: dict[str, Any] = {
    "name": "email.send",
    "risk_level": "low",
    "parameter_schema": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
}


def email_policy(outcome: str = "ALLOW", **rule: Any) -> dict[str, Any]:
    return {"name": "email", "rules": [{"id": "send", "capability": "email.send", "outcome": outcome, **rule}]}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A copy of policies.yaml the test may rewrite before (re)starting a server."""
    target = tmp_path / "policies" / "policies.yaml"
    target.parent.mkdir()
    shutil.copy(POLICIES, target)
    return target


@pytest.fixture
def make_server(tmp_path: Path, policy_file: Path) -> ServerFactory:
    """InProcessServer on a SQLite file in tmp_path with `policy_file`; keyword arguments override settings."""

    def factory(**overrides: Any) -> InProcessServer:
        overrides.setdefault("policy_paths", [policy_file])
        overrides.setdefault("db_url", f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}")
        overrides.setdefault("run_background_tasks", False)
        overrides.setdefault("secret", "test-secret-of-at-least-16-bytes")
        return InProcessServer(**overrides)

    return factory


@pytest.fixture
async def server(make_server: ServerFactory) -> AsyncIterator[InProcessServer]:
    async with make_server() as running:
        yield running


@pytest.fixture
def client(server: InProcessServer) -> httpx.AsyncClient:
    return server.async_http_client()


def proposal(capability: str, **parameters: Any) -> dict[str, Any]:
    return {
        "actor": {"id": "agent-1", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1"},
    }


async def decide(client: httpx.AsyncClient, capability: str, **parameters: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/governance/propose", json=proposal(capability, **parameters))
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


async def send_email(client: httpx.AsyncClient) -> dict[str, Any]:
    return await decide(client, "email.send", to="a@corp.example")


async def save(client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code in (200, 201), response.text


async def email_allowed_then_denied(client: httpx.AsyncClient) -> None:
    """Versions 2 (email.send registered), 3 (policy email: ALLOW) and 4 (email: DENY) after the files' 1."""
    await save(client, "POST", "/api/v1/capabilities", EMAIL)
    await save(client, "POST", "/api/v1/policies", email_policy("ALLOW"))
    await save(client, "PUT", "/api/v1/policies/email", email_policy("DENY", reason="Email is paused."))


async def versions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/policy-versions")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def audit_records(client: httpx.AsyncClient, event_type: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/audit/log", params={"event_type": event_type, "limit": 200})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["items"]
    return records


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def stricter_files(policy_file: Path, target: Path | None = None) -> None:
    """Write `policy_file`'s policies with a stricter small-transfer rule (amount <= 500) to `target`
    (default: over `policy_file` itself)."""
    (target or policy_file).write_text(policy_file.read_text().replace("amount <= 1000", "amount <= 500"))
