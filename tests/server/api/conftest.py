"""Fixtures for the API tests: the app served in-process (InProcessServer, async mode) on a SQLite file,
with a hand-driven clock, the review-expiry task off (tests drive expiry), and an admin client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).with_name("policies.yaml")


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


ServerFactory = Callable[..., InProcessServer]


@pytest.fixture
def make_server(tmp_path: Path, clock: Clock) -> ServerFactory:
    """InProcessServer on a SQLite file in tmp_path; keyword arguments override settings."""

    def factory(**overrides: Any) -> InProcessServer:
        overrides.setdefault("policy_paths", [POLICIES])
        overrides.setdefault("db_url", f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}")
        overrides.setdefault("clock", clock)
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


def proposal(capability: str = "database.query", actor: str = "agent-1", **parameters: Any) -> dict[str, Any]:
    if not parameters and capability == "database.query":
        parameters = {"query": "SELECT 1"}
    return {
        "actor": {"id": actor, "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1", "metadata": {"source": "tests"}},
    }


async def propose(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/api/v1/governance/propose", json=body, headers=headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The envelope's `error`, after checking its shape and the request id."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "code", "message", "request_id", "details"}, error
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"]
    return error


async def until_waiting(server: InProcessServer) -> None:
    """Let the event loop run until a long poll has subscribed to review notifications (at most 10 s).

    Bounded by time, not by turns of the loop: the request reads the store on a worker thread, and a loop
    spinning on `sleep(0)` holds the GIL so that thread needs more turns the faster the machine is idle."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10.0
    while loop.time() < give_up:
        if server.service.notifier.waiting:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no long poll subscribed within 10 s")
