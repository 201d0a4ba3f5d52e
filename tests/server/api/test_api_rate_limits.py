"""Per-key rate limits: a key's own `N/min`, the server-wide default for the others, and counters shared
by two app instances (two replicas) through the real Redis on 127.0.0.1:6379 (`AEGIS_REDIS_URL`).

The Redis tests skip when Redis does not answer, unless AEGIS_TEST_REDIS=required (CI), where they fail.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest
from conftest import ServerFactory, error_of, proposal, propose

REDIS_URL = os.environ.get("AEGIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_or_skip() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            answered = sock.recv(16).startswith(b"+PONG")
    except OSError as exc:
        answered, reason = False, f"{type(exc).__name__}: {exc}"
    else:
        reason = "no PONG"
    if not answered:
        message = f"Redis at 127.0.0.1:6379 does not answer ({reason})"
        if os.environ.get("AEGIS_TEST_REDIS") == "required":
            pytest.fail(message + " (AEGIS_TEST_REDIS=required)")
        pytest.skip(message)
    return REDIS_URL


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_key_with_its_own_limit(make_server: ServerFactory) -> None:
    async with make_server(rate_limit_per_minute=6000, rate_limit_burst=600) as server:
        slow = server.async_http_client(
            await server.acreate_key("slow", ["governance:propose"], rate_limit_per_minute=2)
        )
        assert [(await propose(slow, proposal())).status_code for _ in range(2)] == [200, 200]
        limited = await propose(slow, proposal())
        assert limited.status_code == 429
        error = error_of(limited)
        assert error["code"] == "rate_limited" and "2/min" in error["message"]
        assert int(limited.headers["Retry-After"]) >= 1
        # the other keys keep the server-wide limit
        assert [(await propose(server.async_http_client(), proposal())).status_code for _ in range(5)] == [200] * 5
        # back to the server-wide limit: a bucket of its own, usable at once
        key_id = next(k.key_id for k in await server.store.list_api_keys() if k.name == "slow")
        admin = server.async_http_client()
        assert (await admin.patch(f"/api/v1/keys/{key_id}", json={"rate_limit_per_minute": None})).status_code == 200
        assert (await propose(slow, proposal())).status_code == 200


async def test_a_key_limit_of_zero_is_no_limit(make_server: ServerFactory) -> None:
    async with make_server(rate_limit_per_minute=60, rate_limit_burst=1) as server:
        free = server.async_http_client(
            await server.acreate_key("free", ["governance:propose"], rate_limit_per_minute=0)
        )
        assert [(await propose(free, proposal())).status_code for _ in range(5)] == [200] * 5


async def test_without_redis_each_replica_counts_alone(make_server: ServerFactory) -> None:
    async with make_server() as first, make_server() as second:
        key = await first.acreate_key("shared", ["governance:propose"], rate_limit_per_minute=2)
        a, b = first.async_http_client(key), second.async_http_client(key)
        codes = [(await propose(client, proposal())).status_code for client in (a, b, a, b)]
    assert codes == [200] * 4  # 2 per replica


async def test_redis_shares_the_count_between_replicas(make_server: ServerFactory) -> None:
    url = _redis_or_skip()
    async with make_server(redis_url=url) as first, make_server(redis_url=url) as second:
        key = await first.acreate_key("shared", ["governance:propose"], rate_limit_per_minute=3)
        a, b = first.async_http_client(key), second.async_http_client(key)
        codes = [(await propose(client, proposal())).status_code for client in (a, b, a)]
        assert codes == [200, 200, 200]
        limited = await propose(b, proposal())
        assert limited.status_code == 429 and error_of(limited)["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert (await propose(a, proposal())).status_code == 429
        # the server-wide default is shared too, per key: another key is not affected
        assert (await propose(first.async_http_client(), proposal())).status_code == 200


async def test_redis_down_falls_back_to_per_replica_counts(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="aegis_server.rate_limits"):
        async with make_server(redis_url=f"redis://127.0.0.1:{_closed_port()}/0") as server:
            key = server.async_http_client(
                await server.acreate_key("k", ["governance:propose"], rate_limit_per_minute=2)
            )
            codes = [(await propose(key, proposal())).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # still limited, by this replica alone
    errors = [r for r in caplog.records if r.name == "aegis_server.rate_limits" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # once, then Redis is left alone for REDIS_RETRY_SECONDS
    assert "per replica" in errors[0].getMessage() and "127.0.0.1" not in errors[0].getMessage()
