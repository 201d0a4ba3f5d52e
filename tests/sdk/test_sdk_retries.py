"""Retries: only transport failures are retried, with exponential backoff (clock patched, never slept),
Retry-After honoured and capped, and one Idempotency-Key for every attempt of one call."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from sdk_support import FakePlatform, decision_body, error_body, reply, resolve

from aegis_sdk import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    GovernanceError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

PROPOSAL: dict[str, Any] = {
    "actor": {"id": "agent-001", "type": "ai-agent"},
    "action": {"capability": "database.query", "parameters": {"query": "SELECT 1"}},
}


def failing(status: int, error_type: str = "server_error", code: str = "internal_error") -> httpx.Response:
    return reply(status, error_body(error_type, code, f"failed with {status}"))


# What is retried: (first answer, retried?)
RETRY_TABLE = [
    (failing(429, "rate_limit_error", "rate_limited"), True),
    (failing(500), True),
    (httpx.Response(502, text="bad gateway"), True),
    (failing(503, "server_error", "unavailable"), True),
    (httpx.Response(504, text="gateway timeout"), True),
    (httpx.ConnectError("refused"), True),
    (httpx.ConnectTimeout("connect timeout"), True),
    (httpx.ReadTimeout("read timeout"), True),
    (httpx.WriteTimeout("write timeout"), True),
    (httpx.PoolTimeout("pool timeout"), True),
    (httpx.ReadError("connection reset"), True),
    (httpx.RemoteProtocolError("server hung up"), True),
    (failing(400, "validation_error", "invalid_json"), False),
    (failing(401, "authentication_error", "invalid_api_key"), False),
    (failing(403, "permission_error", "missing_scope"), False),
    (failing(404, "governance_error", "unknown_capability"), False),
    (failing(404, "not_found", "not_found"), False),
    (failing(409, "governance_error", "confirmation_used"), False),
    (failing(413, "validation_error", "body_too_large"), False),
    (failing(422, "governance_error", "invalid_parameters"), False),
    (httpx.Response(501, text="not implemented"), False),
    (httpx.UnsupportedProtocol("no such scheme"), False),
]


@pytest.mark.parametrize(("first", "retried"), RETRY_TABLE)
async def test_retry_table(make_client: Any, sleeps: list[float], first: Any, retried: bool) -> None:
    platform = FakePlatform(first, reply(200, decision_body("ALLOW")))
    client = make_client(platform, retries=3)
    if retried:
        decision = await resolve(client.propose(**PROPOSAL))
        assert decision.outcome == "ALLOW"
        assert len(platform.requests) == 2
        assert len(sleeps) == 1
    else:
        with pytest.raises(Exception) as caught:
            await resolve(client.propose(**PROPOSAL))
        assert len(platform.requests) == 1
        assert sleeps == []
        assert caught.value.__class__.__module__ == "aegis_sdk.errors"


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"])
async def test_a_decision_is_never_retried(make_client: Any, sleeps: list[float], outcome: str) -> None:
    platform = FakePlatform(reply(200, decision_body(outcome, review={"status": "pending"})))
    client = make_client(platform)
    decision = await resolve(client.propose(**PROPOSAL))
    assert decision.outcome == outcome
    assert len(platform.requests) == 1
    assert sleeps == []


async def test_exponential_backoff_then_give_up(make_client: Any, sleeps: list[float]) -> None:
    platform = FakePlatform(failing(503, "server_error", "unavailable"))
    client = make_client(platform, retries=3, retry_delay=1.0)
    with pytest.raises(ServerError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert len(platform.requests) == 4  # the first attempt and 3 retries
    assert sleeps == [1.0, 2.0, 4.0]
    assert "after 4 attempts" in str(caught.value)


async def test_backoff_is_capped(make_client: Any, sleeps: list[float]) -> None:
    platform = FakePlatform(httpx.ConnectError("refused"))
    client = make_client(platform, retries=6, retry_delay=4.0)
    with pytest.raises(APIConnectionError):
        await resolve(client.propose(**PROPOSAL))
    assert sleeps == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


async def test_jitter_shortens_the_delay_by_at_most_a_quarter(make_client: Any, sleeps: list[float]) -> None:
    platform = FakePlatform(httpx.ConnectError("refused"))
    client = make_client(platform, retries=3, retry_delay=2.0)
    client._random = iter([0.0, 0.5, 0.999]).__next__
    with pytest.raises(APIConnectionError):
        await resolve(client.propose(**PROPOSAL))
    assert sleeps == pytest.approx([2.0, 4.0 * 0.875, 8.0 * (1 - 0.25 * 0.999)])


async def test_zero_retries_means_one_attempt(make_client: Any, sleeps: list[float]) -> None:
    platform = FakePlatform(httpx.ReadTimeout("slow"))
    client = make_client(platform, retries=0)
    with pytest.raises(APITimeoutError):
        await resolve(client.propose(**PROPOSAL))
    assert len(platform.requests) == 1
    assert sleeps == []


async def test_retries_from_the_environment(
    make_client: Any, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEGIS_RETRIES", "1")
    platform = FakePlatform(failing(500))
    client = make_client(platform)
    with pytest.raises(ServerError):
        await resolve(client.propose(**PROPOSAL))
    assert len(platform.requests) == 2


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), ("0.5", 0.5), ("0", 0.0), ("3600", 30.0)])
async def test_retry_after_seconds_is_honoured_and_capped(
    make_client: Any, sleeps: list[float], header: str, expected: float
) -> None:
    limited = reply(429, error_body("rate_limit_error", "rate_limited", "slow down"), {"Retry-After": header})
    platform = FakePlatform(limited, reply(200, decision_body()))
    client = make_client(platform, retry_delay=1.0)
    await resolve(client.propose(**PROPOSAL))
    assert sleeps == [expected]


async def test_retry_after_http_date(make_client: Any, sleeps: list[float]) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    unavailable = reply(503, error_body("server_error", "unavailable", "starting"), {"Retry-After": when})
    platform = FakePlatform(unavailable, reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(**PROPOSAL))
    assert len(sleeps) == 1
    assert 10.0 < sleeps[0] <= 20.0


async def test_unreadable_retry_after_falls_back_to_backoff(make_client: Any, sleeps: list[float]) -> None:
    limited = reply(429, error_body("rate_limit_error", "rate_limited", "slow down"), {"Retry-After": "soon"})
    platform = FakePlatform(limited, reply(200, decision_body()))
    client = make_client(platform, retry_delay=0.25)
    await resolve(client.propose(**PROPOSAL))
    assert sleeps == [0.25]


async def test_rate_limit_after_the_last_retry(make_client: Any, sleeps: list[float]) -> None:
    limited = reply(429, error_body("rate_limit_error", "rate_limited", "slow down"), {"Retry-After": "1"})
    client = make_client(FakePlatform(limited), retries=2)
    with pytest.raises(RateLimitError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert sleeps == [1.0, 1.0]
    assert caught.value.retry_after == 1.0


async def test_same_idempotency_key_on_every_attempt(make_client: Any) -> None:
    platform = FakePlatform(httpx.ConnectError("refused"), failing(502), reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(**PROPOSAL))
    keys = [r.headers["Idempotency-Key"] for r in platform.requests]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert len(keys[0]) == 36  # a uuid4


async def test_a_new_idempotency_key_per_logical_call(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(**PROPOSAL))
    await resolve(client.propose(**PROPOSAL))
    first, second = (r.headers["Idempotency-Key"] for r in platform.requests)
    assert first != second


async def test_a_given_idempotency_key_is_used(make_client: Any) -> None:
    platform = FakePlatform(failing(500), reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(**PROPOSAL, idempotency_key="order-1234-refund"))
    assert [r.headers["Idempotency-Key"] for r in platform.requests] == ["order-1234-refund"] * 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ключ"])
async def test_bad_idempotency_key(make_client: Any, key: str) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="idempotency_key"):
        await resolve(client.propose(**PROPOSAL, idempotency_key=key))
    assert platform.requests == []


async def test_other_calls_are_retried_too(make_client: Any, sleeps: list[float]) -> None:
    platform = FakePlatform(failing(503, "server_error", "unavailable"), reply(200, decision_body()))
    client = make_client(platform)
    decision = await resolve(client.decisions.get("dec_0001"))
    assert decision.decision_id == "dec_0001"
    assert len(platform.requests) == 2
    assert "Idempotency-Key" not in platform.requests[0].headers


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (failing(401, "authentication_error", "invalid_api_key"), AuthenticationError),
        (failing(404, "not_found", "not_found"), NotFoundError),
        (failing(409, "governance_error", "not_pending"), GovernanceError),
    ],
)
async def test_client_errors_are_not_retried_on_any_route(
    make_client: Any, sleeps: list[float], answer: httpx.Response, error: type[Exception]
) -> None:
    platform = FakePlatform(answer)
    client = make_client(platform)
    with pytest.raises(error):
        await resolve(client.decisions.review("dec_0001", approve=True))
    assert len(platform.requests) == 1
    assert sleeps == []


async def test_per_call_timeout_is_sent_on_every_attempt(make_client: Any) -> None:
    seen: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        if len(seen) == 1:
            raise httpx.ReadTimeout("slow")
        return reply(200, decision_body())

    client = make_client(FakePlatform(answer), timeout=30.0)
    await resolve(client.propose(**PROPOSAL, timeout=1.5))
    await resolve(client.decisions.get("dec_0001"))
    assert [t["read"] for t in seen] == [1.5, 1.5, 30.0]


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
async def test_bad_per_call_timeout(make_client: Any, timeout: float) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="timeout"):
        await resolve(client.propose(**PROPOSAL, timeout=timeout))
    assert platform.requests == []
