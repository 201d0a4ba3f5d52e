"""Every error is the envelope (framework 404/405/422, 500, 413, 415, 400), the request id, rate limits."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import ServerFactory, error_of, proposal, propose

from aegis_server.inprocess import InProcessServer

PROPOSE = "/api/v1/governance/propose"


async def test_unknown_route_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    error = error_of(response)
    assert (error["type"], error["code"]) == ("not_found", "not_found")
    assert error["details"]["resource"] == "route"


async def test_wrong_method_is_a_405_envelope(client: httpx.AsyncClient) -> None:
    response = await client.delete(PROPOSE)
    assert response.status_code == 405
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", "method_not_allowed")
    assert error["details"]["allowed"] == ["POST"]
    assert response.headers["allow"] == "POST"


async def test_schema_violation_is_a_422_envelope_without_values(client: httpx.AsyncClient) -> None:
    body = proposal()
    body["actor"]["type"] = "robot-secret-value"
    body["extra"] = 1
    response = await propose(client, body)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", "invalid_request")
    locations = {tuple(e["loc"]) for e in error["details"]["errors"]}
    assert ("body", "actor", "type") in locations
    assert ("body", "extra") in locations
    assert "robot-secret-value" not in response.text


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(PROPOSE)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


async def test_unexpected_exception_is_a_500_envelope_and_logged_with_the_request_id(
    server: InProcessServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("kaboom")

    server.service.verify_audit = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="aegis_server"):
        response = await client.get("/api/v1/audit/verify", headers={"X-Request-ID": "req-500-test"})
    assert response.status_code == 500
    error = error_of(response)
    assert (error["type"], error["code"], error["request_id"]) == ("server_error", "internal_error", "req-500-test")
    assert "kaboom" not in response.text
    assert any(r.request_id == "req-500-test" and r.exc_info for r in caplog.records)  # type: ignore[attr-defined]


async def test_database_failure_is_a_503_envelope(server: InProcessServer, client: httpx.AsyncClient) -> None:
    from sqlalchemy.exc import OperationalError

    async def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    server.store.get_decision = down  # type: ignore[method-assign]
    response = await client.get("/api/v1/governance/decisions/dec_x")
    assert response.status_code == 503
    assert error_of(response)["code"] == "unavailable"
    assert response.headers["retry-after"] == "1"


@pytest.fixture
async def small_server(make_server: ServerFactory) -> AsyncIterator[InProcessServer]:
    async with make_server(max_body_bytes=1000, max_json_depth=5) as server:
        yield server


async def test_body_too_large_by_content_length(small_server: InProcessServer) -> None:
    response = await propose(small_server.async_http_client(), proposal(query="x" * 2000))
    assert response.status_code == 413
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", "body_too_large")


async def test_body_too_large_while_reading_a_chunked_body(small_server: InProcessServer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"actor": {"id": "a"}, "action": {"capability": "database.query", "parameters": {"query": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}}}'

    client = small_server.async_http_client()
    response = await client.post(PROPOSE, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"


async def test_too_deep_is_422(small_server: InProcessServer) -> None:
    body = proposal(query="x", nested={"a": {"b": {"c": {"d": 1}}}})
    response = await propose(small_server.async_http_client(), body)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", "too_deep")


async def test_absurdly_deep_json_is_422_not_a_crash(client: httpx.AsyncClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = await client.post(PROPOSE, content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "too_deep"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"actor": ', "invalid_json"),
        (b'{"actor": {"id": "a", "id": "b"}}', "duplicate_keys"),
        (b'{"x": NaN}', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, content: bytes, code: str) -> None:
    response = await client.post(PROPOSE, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(PROPOSE, content=json.dumps(proposal()).encode(), headers=headers)
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PROPOSE, content=json.dumps(proposal()).encode(), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/api/v1/health", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    generated = await client.get("/api/v1/health")
    assert generated.headers["x-request-id"].startswith("req_")
    unsafe = await client.get("/api/v1/health", headers={"X-Request-ID": "bad id with spaces"})
    assert unsafe.headers["x-request-id"].startswith("req_")


async def test_rate_limit_is_429_with_retry_after(make_server: ServerFactory) -> None:
    async with make_server(rate_limit_per_minute=60, rate_limit_burst=2) as server:
        client = server.async_http_client()
        assert (await client.get("/api/v1/capabilities")).status_code == 200
        assert (await client.get("/api/v1/capabilities")).status_code == 200
        limited = await client.get("/api/v1/capabilities")
        other_key = server.async_http_client(await server.acreate_key("other", ["governance:read"]))
        assert (await other_key.get("/api/v1/capabilities")).status_code == 200
    assert limited.status_code == 429
    error = error_of(limited)
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert limited.headers["retry-after"] == "1"
    assert error["details"]["retry_after"] == 1


async def test_rate_limit_zero_disables_it(make_server: ServerFactory) -> None:
    async with make_server(rate_limit_per_minute=0, rate_limit_burst=1) as server:
        client = server.async_http_client()
        statuses = {(await client.get("/api/v1/capabilities")).status_code for _ in range(5)}
    assert statuses == {200}


async def test_logs_carry_the_request_id_and_never_parameters_or_keys(
    server: InProcessServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await propose(client, proposal(query="SELECT secret_column"), **{"X-Request-ID": "req-log-test"})
    access = [r for r in caplog.records if r.name == "aegis_server" and "/api/v1/governance/propose" in r.getMessage()]
    assert [getattr(r, "request_id", None) for r in access] == ["req-log-test"]
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("aegis_server"))
    assert "secret_column" not in text
    assert server.api_key not in text
