"""Connections: one pool per client reused across calls, closed by close()/aclose()/`with`, and a
user-supplied http_client is left open. Logging: ids and statuses, never keys, tokens or parameter values."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT, FakePlatform, decision_body, reply, resolve

from aegis_sdk import AegisClient, AsyncAegisClient

PROPOSAL: dict[str, Any] = {
    "actor": {"id": "agent-001", "type": "ai-agent"},
    "action": {"capability": "payments.refund", "parameters": {"amount": 40, "card": "4111-1111-SECRET"}},
}


def test_one_connection_is_reused_across_calls(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, peers = loopback_server
    with AegisClient(endpoint=endpoint, api_key=API_KEY) as aegis:
        for _ in range(5):
            assert aegis.propose(**PROPOSAL).outcome == "ALLOW"
    assert len(peers) == 1  # five calls, one TCP connection


async def test_async_one_connection_is_reused_across_calls(loopback_server: tuple[str, set[Any]]) -> None:
    endpoint, peers = loopback_server
    async with AsyncAegisClient(endpoint=endpoint, api_key=API_KEY) as aegis:
        for _ in range(5):
            assert (await aegis.propose(**PROPOSAL)).outcome == "ALLOW"
    assert len(peers) == 1


def test_with_block_closes_the_clients_own_pool() -> None:
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY) as aegis:
        assert not aegis._http.is_closed
    assert aegis._http.is_closed


async def test_async_with_block_closes_the_clients_own_pool() -> None:
    async with AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY) as aegis:
        assert not aegis._http.is_closed
    assert aegis._http.is_closed


def test_close_is_idempotent() -> None:
    aegis = AegisClient(endpoint=ENDPOINT, api_key=API_KEY)
    aegis.close()
    aegis.close()
    assert aegis._http.is_closed


async def test_aclose_is_idempotent() -> None:
    aegis = AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY)
    await aegis.aclose()
    await aegis.aclose()
    assert aegis._http.is_closed


def test_a_user_supplied_http_client_is_left_open() -> None:
    http = httpx.Client(transport=httpx.MockTransport(FakePlatform(reply(200, decision_body()))))
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http) as aegis:
        aegis.propose(**PROPOSAL)
    assert not http.is_closed
    http.close()


async def test_a_user_supplied_async_http_client_is_left_open() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(FakePlatform(reply(200, decision_body()))))
    async with AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http) as aegis:
        await aegis.propose(**PROPOSAL)
    assert not http.is_closed
    await http.aclose()


async def test_the_same_pool_serves_every_call(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    pool = client._http
    await resolve(client.propose(**PROPOSAL))
    await resolve(client.decisions.get("dec_0001"))
    assert client._http is pool
    assert len(platform.requests) == 2


def test_injected_client_sees_full_urls_and_keeps_its_own_headers() -> None:
    platform = FakePlatform(reply(200, decision_body()))
    http = httpx.Client(
        transport=httpx.MockTransport(platform), base_url="http://ignored.example", headers={"X-Tenant": "t1"}
    )
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=http) as aegis:
        aegis.propose(**PROPOSAL)
    assert str(platform.last.url) == f"{ENDPOINT}/api/v1/governance/propose"
    assert platform.last.headers["X-Tenant"] == "t1"
    http.close()


async def test_logs_carry_ids_never_secrets(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    body = decision_body("REQUIRE_CONFIRMATION", decision_id="dec_log", confirmation_token="ctok_SECRET_TOKEN")
    platform = FakePlatform(
        reply(503, {"error": {"type": "server_error", "code": "unavailable", "message": "later"}}),
        reply(200, body, {"X-Request-ID": "req_log_1"}),
    )
    client = make_client(platform)
    with caplog.at_level(logging.DEBUG, logger="aegis_sdk"):
        decision = await resolve(client.propose(**PROPOSAL))
        await resolve(client.confirm(decision))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /governance/propose" in text
    assert "-> 503" in text and "retry 1/3" in text
    assert "-> 200 request_id=req_log_1" in text
    assert "decision dec_log outcome=REQUIRE_CONFIRMATION" in text
    for secret in (API_KEY, "ctok_SECRET_TOKEN", "4111-1111-SECRET", "SECRET"):
        assert secret not in text
    strays = [(record.name, record.getMessage()[:200]) for record in caplog.records if record.name != "aegis_sdk"]
    assert strays == []
