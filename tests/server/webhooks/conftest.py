"""Fixtures for the webhook tests: the app in-process on a SQLite file (background tasks off, so each test
runs the dispatcher it needs), tiny retry schedules, a real receiver on 127.0.0.1, and helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_server.inprocess import InProcessServer
from aegis_server.notifications import WebhookDispatcher

from .receiver import Receiver

POLICIES = Path(__file__).with_name("policies.yaml")
PUBLIC_URL = "https://aegis.example.test"

ServerFactory = Callable[..., InProcessServer]


@pytest.fixture
def make_server(tmp_path: Path) -> ServerFactory:
    """InProcessServer on a SQLite file in tmp_path, tiny webhook timings; keyword arguments override settings."""

    def factory(**overrides: Any) -> InProcessServer:
        overrides.setdefault("policy_paths", [POLICIES])
        overrides.setdefault("db_url", f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}")
        overrides.setdefault("run_background_tasks", False)
        overrides.setdefault("secret", "test-secret-of-at-least-16-bytes")
        overrides.setdefault("public_url", PUBLIC_URL)
        overrides.setdefault("webhook_timeout_seconds", 2.0)
        overrides.setdefault("webhook_retry_schedule_seconds", (0.05, 0.05, 0.05))
        overrides.setdefault("webhook_poll_interval_seconds", 0.05)
        return InProcessServer(**overrides)

    return factory


@pytest.fixture
async def server(make_server: ServerFactory) -> AsyncIterator[InProcessServer]:
    async with make_server() as running:
        yield running


@pytest.fixture
def client(server: InProcessServer) -> httpx.AsyncClient:
    return server.async_http_client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.release()
        running.stop()


@contextlib.asynccontextmanager
async def dispatching(server: InProcessServer, **kwargs: Any) -> AsyncIterator[WebhookDispatcher]:
    """The server's webhook dispatcher loop, running for the block."""
    dispatcher = WebhookDispatcher(server.store, server.app.state.settings, metrics=server.app.state.metrics, **kwargs)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()


def proposal(capability: str, actor: str = "support-bot-1", **parameters: Any) -> dict[str, Any]:
    return {
        "actor": {"id": actor, "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1"},
    }


def escalation(amount: int = 5000) -> dict[str, Any]:
    return proposal("payments.transfer", amount=amount)


def denial() -> dict[str, Any]:
    return proposal("database.drop")


async def propose(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/governance/propose", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


async def create_endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("event_types", ["*"])
    response = await client.post("/api/v1/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error
