"""Fixtures for the aegis-langchain tests: the real aegis-server in-process with the example policies, an
agent client and a reviewer client, and clean package defaults and environment.

aegis_server is imported inside the fixtures only: test_fake_platform.py runs on Python 3.10 from the built
wheels, where the server (Python >= 3.11) is not installed."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from lc_support import POLICIES

import aegis_langchain
from aegis_sdk import AegisClient, AsyncAegisClient

if TYPE_CHECKING:
    from aegis_server.inprocess import InProcessServer


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AEGIS_ENDPOINT", "AEGIS_API_KEY", "AEGIS_TIMEOUT", "AEGIS_RETRIES", "AEGIS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    aegis_langchain.reset_configuration()
    yield
    aegis_langchain.reset_configuration()


def _closing_clients(running: InProcessServer) -> tuple[list[AegisClient], list[AsyncAegisClient]]:
    """Remember the SDK clients a test makes, to close them (their queued execution reports flushed) while the
    server still runs: a report left queued would otherwise be retried against a stopped server until exit."""
    made: tuple[list[AegisClient], list[AsyncAegisClient]] = ([], [])
    make, amake = running.client, running.async_client

    def client(*args: Any, **kwargs: Any) -> AegisClient:
        made[0].append(make(*args, **kwargs))
        return made[0][-1]

    def async_client(*args: Any, **kwargs: Any) -> AsyncAegisClient:
        made[1].append(amake(*args, **kwargs))
        return made[1][-1]

    running.client = client  # type: ignore[method-assign]
    running.async_client = async_client  # type: ignore[method-assign]
    return made


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    from aegis_server.inprocess import InProcessServer

    with InProcessServer(policy_paths=[POLICIES]) as running:
        clients, _ = _closing_clients(running)
        yield running
        for made in clients:
            made.close()


@pytest.fixture
def client(server: InProcessServer) -> AegisClient:
    """The agent's client."""
    return server.client()


@pytest.fixture
def reviewer(server: InProcessServer) -> AegisClient:
    """An operator's client: a reviewer key of its own (the key that proposed may not review its decision)."""
    return server.client(server.create_key("operator", ["governance:review", "governance:read"]))


@pytest.fixture
async def aserver() -> AsyncIterator[InProcessServer]:
    from aegis_server.inprocess import InProcessServer

    async with InProcessServer(policy_paths=[POLICIES]) as running:
        sync_clients, async_clients = _closing_clients(running)
        yield running
        for made in sync_clients:
            made.close()
        for amade in async_clients:
            await amade.aclose()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
