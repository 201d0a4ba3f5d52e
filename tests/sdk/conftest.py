"""Fixtures for the aegis-sdk tests: a scripted fake platform behind httpx.MockTransport, both clients with
their sleep and jitter patched (nothing here ever really sleeps), and a clean environment.

These tests run from the SDK wheel alone on Python 3.10 (scripts/test_sdk_pythons.sh): they import only
aegis_sdk, httpx, pydantic and pytest.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT, AnyClient, FakePlatform, keep_alive_server, patch_client

from aegis_sdk import AegisClient, AsyncAegisClient


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AEGIS_ENDPOINT", "AEGIS_API_KEY", "AEGIS_TIMEOUT", "AEGIS_RETRIES", "AEGIS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    sdk_logger = logging.getLogger("aegis_sdk")
    level, handlers = sdk_logger.level, list(sdk_logger.handlers)
    yield
    sdk_logger.setLevel(level)
    sdk_logger.handlers[:] = handlers


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay a client asked to sleep, in order (the sleep itself is patched out)."""
    return []


@pytest.fixture
def make_sync(sleeps: list[float]) -> Iterator[Callable[..., AegisClient]]:
    made: list[AegisClient] = []

    def make(platform: FakePlatform, **kwargs: Any) -> AegisClient:
        kwargs.setdefault("endpoint", ENDPOINT)
        kwargs.setdefault("api_key", API_KEY)
        client = AegisClient(http_client=httpx.Client(transport=httpx.MockTransport(platform)), **kwargs)
        patch_client(client, sleeps)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
        client._http.close()


@pytest.fixture
async def make_async(sleeps: list[float]) -> AsyncIterator[Callable[..., AsyncAegisClient]]:
    made: list[AsyncAegisClient] = []

    def make(platform: FakePlatform, **kwargs: Any) -> AsyncAegisClient:
        kwargs.setdefault("endpoint", ENDPOINT)
        kwargs.setdefault("api_key", API_KEY)
        client = AsyncAegisClient(http_client=httpx.AsyncClient(transport=httpx.MockTransport(platform)), **kwargs)
        patch_client(client, sleeps)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
        await client._http.aclose()


@pytest.fixture(params=["sync", "async"])
def make_client(
    request: pytest.FixtureRequest,
    make_sync: Callable[..., AegisClient],
    make_async: Callable[..., AsyncAegisClient],
) -> Callable[..., AnyClient]:
    """Runs the test once with AegisClient and once with AsyncAegisClient; use `resolve()` on every call."""
    return make_sync if request.param == "sync" else make_async


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, set[Any]]]:
    """A keep-alive HTTP server on loopback answering every POST with an ALLOW decision: (endpoint, the set
    of client (host, port) pairs seen, one per TCP connection)."""
    with keep_alive_server() as running:
        yield running
