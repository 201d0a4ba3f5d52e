"""Fixtures for the aegis-langchain tests: the real aegis-server in-process with the example policies, an
agent client and a reviewer client, and clean package defaults and environment.

aegis_server is imported inside the fixtures only: test_fake_platform.py runs on Python 3.10 from the built
wheels, where the server (Python >= 3.11) is not installed."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
from lc_support import POLICIES

import aegis_langchain
from aegis_sdk import AegisClient

if TYPE_CHECKING:
    from aegis_server.inprocess import InProcessServer


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AEGIS_ENDPOINT", "AEGIS_API_KEY", "AEGIS_TIMEOUT", "AEGIS_RETRIES", "AEGIS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    aegis_langchain.reset_configuration()
    yield
    aegis_langchain.reset_configuration()


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    from aegis_server.inprocess import InProcessServer

    with InProcessServer(policy_paths=[POLICIES]) as running:
        yield running


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
        yield running


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
