"""Fixtures for the aegis-fastapi tests: a real aegis-server in-process (on the test's loop) and the SDK's
fake platform, each wired into a governed FastAPI app driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi_support import POLICIES

from aegis_sdk import AsyncAegisClient

if TYPE_CHECKING:  # imported lazily: the fake-platform tests also run without the server (Python 3.10)
    from aegis_server.inprocess import InProcessServer


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AEGIS_ENDPOINT", "AEGIS_API_KEY", "AEGIS_TIMEOUT", "AEGIS_RETRIES", "AEGIS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
async def server() -> AsyncIterator[InProcessServer]:
    from aegis_server.inprocess import InProcessServer

    async with InProcessServer(policy_paths=[POLICIES]) as running:
        made: list[AsyncAegisClient] = []
        make = running.async_client

        def async_client(*args: Any, **kwargs: Any) -> AsyncAegisClient:
            made.append(make(*args, **kwargs))
            return made[-1]

        running.async_client = async_client  # type: ignore[method-assign]
        yield running
        # Close the test's clients while the server runs: closing sends their queued execution reports (a report
        # left queued would be retried against a stopped server until interpreter exit).
        for client in made:
            await client.aclose()
