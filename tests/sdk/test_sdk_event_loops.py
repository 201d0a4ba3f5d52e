"""One AsyncAegisClient shared by several event loops (a module global awaited from several `asyncio.run`
calls, threads, or pytest-asyncio's per-test loops), and transport failures that are not httpx errors:
each must end as an answer or as an AegisError, never as a bare RuntimeError."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT, keep_alive_server

from aegis_sdk import AegisClient, AegisError, APIConnectionError, AsyncAegisClient

PROPOSAL: dict[str, Any] = {
    "actor": {"id": "agent-001", "type": "ai-agent"},
    "action": {"capability": "payments.refund", "parameters": {"amount": 40}},
}


@pytest.fixture(scope="module")
def shared_client() -> Iterator[AsyncAegisClient]:
    """A client made once, as an app makes it at import time, then awaited from the separate event loop
    pytest-asyncio gives each test."""
    with keep_alive_server() as (endpoint, _):
        client = AsyncAegisClient(endpoint=endpoint, api_key=API_KEY)
        yield client
        asyncio.run(client.aclose())


@pytest.mark.parametrize("turn", [1, 2, 3])
async def test_a_module_level_client_serves_each_pytest_asyncio_loop(
    shared_client: AsyncAegisClient, turn: int
) -> None:
    assert (await shared_client.propose(**PROPOSAL)).outcome == "ALLOW"


def test_a_client_serves_one_asyncio_run_after_another(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, peers = loopback_server
    aegis = AsyncAegisClient(endpoint=endpoint, api_key=API_KEY)

    async def propose() -> str:
        return (await aegis.propose(**PROPOSAL)).outcome

    # The first loop leaves a keep-alive connection in its pool; the second loop must not reuse it.
    assert asyncio.run(propose()) == "ALLOW"
    assert asyncio.run(propose()) == "ALLOW"
    assert asyncio.run(propose()) == "ALLOW"
    assert len(peers) == 3  # one connection per loop
    asyncio.run(aegis.aclose())
    assert aegis._http.is_closed


def test_a_client_serves_loops_running_at_once_in_several_threads(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, _ = loopback_server
    aegis = AsyncAegisClient(endpoint=endpoint, api_key=API_KEY)
    outcomes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    async def several() -> None:
        for _ in range(5):
            outcomes.append((await aegis.propose(**PROPOSAL)).outcome)
            await asyncio.sleep(0)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            asyncio.run(several())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert outcomes == ["ALLOW"] * 15
    asyncio.run(aegis.aclose())


async def test_aclose_on_a_later_loop_closes_the_client(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, _ = loopback_server
    aegis = AsyncAegisClient(endpoint=endpoint, api_key=API_KEY)

    async def propose() -> str:
        return (await aegis.propose(**PROPOSAL)).outcome

    await asyncio.to_thread(asyncio.run, propose())  # the first pool's loop is gone now
    assert await propose() == "ALLOW"
    await aegis.aclose()
    assert aegis._http.is_closed
    with pytest.raises(AegisError, match="closed"):
        await propose()


def test_an_http_client_bound_to_a_closed_loop_is_an_aegis_error(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, _ = loopback_server
    http = httpx.AsyncClient()
    aegis = AsyncAegisClient(endpoint=endpoint, api_key=API_KEY, http_client=http, retries=0)

    async def propose() -> str:
        return (await aegis.propose(**PROPOSAL)).outcome

    assert asyncio.run(propose()) == "ALLOW"
    with pytest.raises(APIConnectionError, match="bound to another event loop") as caught:
        asyncio.run(propose())
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert isinstance(caught.value.__cause__.__cause__, RuntimeError)


class _BrokenTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A custom transport with a bug: it raises something that is not an httpx error."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise ValueError("transport bug")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise ValueError("transport bug")


def test_a_failing_custom_transport_is_an_aegis_error_sync() -> None:
    http = httpx.Client(transport=_BrokenTransport())
    with (
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http) as aegis,
        pytest.raises(APIConnectionError, match="ValueError: transport bug") as caught,
    ):
        aegis.propose(**PROPOSAL)
    assert isinstance(caught.value.__cause__.__cause__, ValueError)  # type: ignore[union-attr]


async def test_a_failing_custom_transport_is_an_aegis_error_async() -> None:
    http = httpx.AsyncClient(transport=_BrokenTransport())
    async with AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http) as aegis:
        with pytest.raises(APIConnectionError, match="ValueError: transport bug"):
            await aegis.propose(**PROPOSAL)
    await http.aclose()


async def test_a_closed_http_client_is_an_aegis_error() -> None:
    http = httpx.AsyncClient()
    await http.aclose()
    aegis = AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http)
    with pytest.raises(APIConnectionError, match="client has been closed"):
        await aegis.propose(**PROPOSAL)


def test_cancellation_is_not_turned_into_an_error(loopback_server: tuple[str, set[Any]]) -> None:
    class _Stall(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(3600)
            raise AssertionError("not reached")

    async def main() -> None:
        http = httpx.AsyncClient(transport=_Stall())
        aegis = AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http)
        task = asyncio.create_task(aegis.propose(**PROPOSAL))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await http.aclose()

    asyncio.run(main())
