"""A FastAPI app with a module-level AsyncAegisClient, driven the ways real test suites drive it: one
Starlette TestClient after another (each runs the app on a loop of its own), and pytest-asyncio tests
(a loop per test). The platform is the real aegis-server on a loopback socket, so the client's pooled
keep-alive connections are real and belong to the loop that opened them."""

import asyncio
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from fastapi_support import BOT, POLICIES, current_actor, serve

from aegis_fastapi import Aegis, Decision
from aegis_sdk import AsyncAegisClient


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[str, str]]:
    """The real aegis-server served by uvicorn on a loopback port, on a loop in a thread of its own:
    (endpoint, API key)."""
    from aegis_server.inprocess import InProcessServer

    started: dict[str, Any] = {}
    ready = threading.Event()

    async def run() -> None:
        started["stop"] = stop = asyncio.Event()
        started["loop"] = asyncio.get_running_loop()
        async with InProcessServer(policy_paths=[POLICIES]) as server, serve(server.app) as url:
            started.update(endpoint=url, api_key=server.api_key)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(timeout=60), "the platform did not start"
    yield started["endpoint"], started["api_key"]
    started["loop"].call_soon_threadsafe(started["stop"].set)
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def shop(platform: tuple[str, str]) -> Iterator[FastAPI]:
    """The app as users write it: the client is a module global, created once, outside any loop."""
    endpoint, api_key = platform
    aegis_client = AsyncAegisClient(endpoint=endpoint, api_key=api_key)
    aegis = Aegis(actor=current_actor, client=aegis_client)
    app = aegis.install(FastAPI())

    @app.post("/queries")
    async def run_query(
        query: str, database: str, decision: Annotated[Decision, Depends(aegis.require("database.query"))]
    ) -> dict[str, Any]:
        return {"ran": query, "decision_id": decision.decision_id}

    yield app
    asyncio.run(aegis_client.aclose())


def _query(http: TestClient) -> None:
    answer = http.post("/queries", params={"query": "SELECT 1", "database": "staging"}, headers=BOT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ran"] == "SELECT 1"


@pytest.mark.parametrize("turn", [1, 2])
def test_one_testclient_after_another(shop: FastAPI, turn: int) -> None:
    # Each TestClient runs the app on a new loop in a portal thread, and closes that loop on exit.
    with TestClient(shop) as first:
        _query(first)
        _query(first)
    with TestClient(shop) as second:
        _query(second)


@pytest.mark.parametrize("turn", [1, 2])
async def test_pytest_asyncio_tests_each_on_their_own_loop(shop: FastAPI, turn: int) -> None:
    transport = httpx.ASGITransport(app=shop)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answer = await http.post("/queries", params={"query": "SELECT 1", "database": "staging"}, headers=BOT)
    assert answer.status_code == 200, answer.text
