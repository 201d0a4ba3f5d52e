"""The error tree: every envelope type and code maps to its class, with status, code, message, request id
and details; answers that are not envelopes still become clear errors."""

from __future__ import annotations

import pickle
from typing import Any

import httpx
import pytest
from sdk_support import FakePlatform, decision_body, error_body, reply, resolve

import aegis_sdk
from aegis_sdk import (
    AegisError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfirmationError,
    ConfirmationExpiredError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    ExecutionReportError,
    GovernanceError,
    IdempotencyConflictError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    ParameterValidationError,
    PermissionDeniedError,
    PolicyError,
    RateLimitError,
    ReviewError,
    ServerError,
    UnknownCapabilityError,
)

PROPOSAL: dict[str, Any] = {
    "actor": {"id": "agent-001", "type": "ai-agent"},
    "action": {"capability": "database.query", "parameters": {"query": "SELECT 1"}},
}

# status, type, code -> class (the server's code table)
TABLE = [
    (400, "validation_error", "invalid_json", InvalidRequestError),
    (400, "validation_error", "duplicate_keys", InvalidRequestError),
    (413, "validation_error", "body_too_large", InvalidRequestError),
    (415, "validation_error", "unsupported_media_type", InvalidRequestError),
    (422, "validation_error", "invalid_request", InvalidRequestError),
    (422, "validation_error", "too_deep", InvalidRequestError),
    (422, "validation_error", "parameters_too_large", InvalidRequestError),
    (405, "validation_error", "method_not_allowed", InvalidRequestError),
    (422, "governance_error", "invalid_parameters", ParameterValidationError),
    (404, "governance_error", "unknown_capability", UnknownCapabilityError),
    (409, "governance_error", "confirmation_used", ConfirmationUsedError),
    (409, "governance_error", "confirmation_expired", ConfirmationExpiredError),
    (409, "governance_error", "confirmation_mismatch", ConfirmationMismatchError),
    (409, "governance_error", "confirmation_invalid", ConfirmationError),
    (409, "governance_error", "not_pending", ReviewError),
    (403, "governance_error", "self_review", ReviewError),
    (409, "governance_error", "already_reported", ExecutionReportError),
    (403, "governance_error", "not_proposer", ExecutionReportError),
    (409, "governance_error", "not_allowed", ExecutionReportError),
    (409, "governance_error", "idempotency_conflict", IdempotencyConflictError),
    (409, "governance_error", "policy_conflict", PolicyError),
    (422, "governance_error", "invalid_policy", PolicyError),
    (409, "governance_error", "something_new", GovernanceError),
    (401, "authentication_error", "missing_api_key", AuthenticationError),
    (401, "authentication_error", "invalid_api_key", AuthenticationError),
    (403, "permission_error", "missing_scope", PermissionDeniedError),
    (404, "not_found", "not_found", NotFoundError),
    (429, "rate_limit_error", "rate_limited", RateLimitError),
    (500, "server_error", "internal_error", ServerError),
    (503, "server_error", "unavailable", ServerError),
]


@pytest.mark.parametrize(("status", "error_type", "code", "cls"), TABLE)
async def test_envelope_maps_to_its_class(
    make_client: Any, status: int, error_type: str, code: str, cls: type[AegisError]
) -> None:
    body = error_body(error_type, code, "What was wrong and how to fix it.", "req_42", hint="x")
    client = make_client(FakePlatform(reply(status, body)), retries=0)
    with pytest.raises(cls) as caught:
        await resolve(client.propose(**PROPOSAL))
    error = caught.value
    assert type(error) is cls
    assert (error.status_code, error.code, error.request_id) == (status, code, "req_42")
    assert error.message == "What was wrong and how to fix it."
    assert error.details == {"hint": "x"}
    assert error.error_type == error_type
    assert str(error) == f"What was wrong and how to fix it. [code={code}, status={status}, request_id=req_42]"
    assert isinstance(error, AegisError)
    # An invalid request is a GovernanceError too: it must change, resending cannot help.
    assert isinstance(error, GovernanceError) == (error_type in ("governance_error", "validation_error"))


def test_governance_errors_are_aegis_errors_and_transport_errors_are_not_governance_errors() -> None:
    governance = [
        InvalidRequestError,
        UnknownCapabilityError,
        ParameterValidationError,
        ConfirmationError,
        ConfirmationUsedError,
        ConfirmationExpiredError,
        ConfirmationMismatchError,
        ReviewError,
        ExecutionReportError,
        IdempotencyConflictError,
        PolicyError,
    ]
    for cls in governance:
        assert issubclass(cls, GovernanceError)
    transport = [
        APIConnectionError,
        APITimeoutError,
        APIStatusError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        RateLimitError,
        ServerError,
        MalformedResponseError,
    ]
    for cls in transport:
        assert issubclass(cls, AegisError)
        assert not issubclass(cls, GovernanceError)
    assert issubclass(GovernanceError, AegisError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(InvalidRequestError, ValueError)


@pytest.mark.parametrize(
    ("actor", "answer", "says"),
    [
        ({"id": "agent-001", "type": "robot"}, reply(200, decision_body()), "actor.type"),  # caught before sending
        ({"id": "agent-001"}, reply(422, error_body("validation_error", "invalid_request", "bad")), "invalid_request"),
    ],
)
async def test_the_page_pattern_reports_an_invalid_proposal_as_a_governance_error(
    make_client: Any, actor: dict[str, Any], answer: httpx.Response, says: str
) -> None:
    """The SDK page's pattern: `except GovernanceError` (the request must change) before `except AegisError`
    (transport). A proposal the SDK rejects before sending, or the platform rejects as invalid, is the former."""
    client = make_client(FakePlatform(answer))
    try:
        await resolve(client.propose(actor, {"capability": "database.query", "parameters": {}}))
    except GovernanceError as e:
        branch = f"Governance error: {e}"
    except AegisError as e:
        branch = f"Transport error: {e}"
    assert branch.startswith("Governance error:")
    assert says in branch


def test_every_error_class_is_exported() -> None:
    for name in dir(aegis_sdk.errors):
        obj = getattr(aegis_sdk.errors, name)
        if isinstance(obj, type) and issubclass(obj, AegisError):
            assert name in aegis_sdk.__all__, name
            assert getattr(aegis_sdk, name) is obj


async def test_unknown_capability_carries_suggestions(make_client: Any) -> None:
    body = error_body(
        "governance_error",
        "unknown_capability",
        "Unknown capability 'database.qeury'; did you mean 'database.query'?",
        suggestions=["database.query"],
    )
    client = make_client(FakePlatform(reply(404, body)), retries=0)
    with pytest.raises(UnknownCapabilityError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert caught.value.suggestions == ["database.query"]
    assert "did you mean" in str(caught.value)


async def test_parameter_validation_carries_field_and_errors(make_client: Any) -> None:
    problems = [{"loc": "amount", "msg": "must be <= 1000"}]
    body = error_body("governance_error", "invalid_parameters", "amount is too big", field="amount", errors=problems)
    client = make_client(FakePlatform(reply(422, body)), retries=0)
    with pytest.raises(ParameterValidationError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert (caught.value.field, caught.value.errors) == ("amount", problems)


async def test_rate_limit_carries_retry_after(make_client: Any) -> None:
    body = error_body("rate_limit_error", "rate_limited", "Slow down", retry_after=7)
    client = make_client(FakePlatform(reply(429, body, {"Retry-After": "3"})), retries=0)
    with pytest.raises(RateLimitError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert caught.value.retry_after == 3.0


async def test_rate_limit_retry_after_from_details_without_header(make_client: Any) -> None:
    body = error_body("rate_limit_error", "rate_limited", "Slow down", retry_after=7)
    client = make_client(FakePlatform(reply(429, body)), retries=0)
    with pytest.raises(RateLimitError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (418, APIStatusError),
        (429, RateLimitError),
        (502, ServerError),
    ],
)
async def test_answers_without_an_envelope(make_client: Any, status: int, cls: type[AegisError]) -> None:
    html = httpx.Response(status, text="<html>Bad Gateway</html>", headers={"X-Request-ID": "req_proxy"})
    client = make_client(FakePlatform(html), retries=0)
    with pytest.raises(cls) as caught:
        await resolve(client.propose(**PROPOSAL))
    error = caught.value
    assert (error.status_code, error.code, error.request_id) == (status, f"http_{status}", "req_proxy")
    assert "POST /api/v1/governance/propose" in error.message
    assert f"HTTP {status}" in error.message
    assert "<html>" not in error.message


async def test_request_id_falls_back_to_the_header(make_client: Any) -> None:
    body = {"error": {"type": "not_found", "code": "not_found", "message": "No decision 'dec_x'."}}
    client = make_client(FakePlatform(reply(404, body, {"X-Request-ID": "req_from_header"})))
    with pytest.raises(NotFoundError) as caught:
        await resolve(client.decisions.get("dec_x"))
    assert caught.value.request_id == "req_from_header"
    assert "request_id=req_from_header" in str(caught.value)


async def test_connection_error(make_client: Any) -> None:
    client = make_client(FakePlatform(httpx.ConnectError("connection refused")), retries=0)
    with pytest.raises(APIConnectionError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert not isinstance(caught.value, APITimeoutError)
    assert caught.value.code == "connection_error"
    assert caught.value.status_code is None
    assert "AEGIS_ENDPOINT" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_timeout_error(make_client: Any) -> None:
    client = make_client(FakePlatform(httpx.ReadTimeout("read timed out")), retries=0, timeout=2.0)
    with pytest.raises(APITimeoutError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert caught.value.code == "timeout"
    assert "2s" in str(caught.value)
    assert "AEGIS_TIMEOUT" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (httpx.Response(200, text="not json"), "malformed_response"),
        (httpx.Response(200, json=["a", "list"]), "malformed_response"),
        (httpx.Response(200, json={"decision_id": "dec_1"}), "malformed_response"),
        (httpx.Response(200, json=decision_body("MAYBE")), "unknown_outcome"),
        (httpx.Response(200, json=decision_body(risk_score=7)), "malformed_response"),
        (httpx.Response(200, json=decision_body(review={"status": "pondering"})), "malformed_response"),
    ],
)
async def test_malformed_decisions(make_client: Any, answer: httpx.Response, code: str) -> None:
    client = make_client(FakePlatform(answer))
    with pytest.raises(MalformedResponseError) as caught:
        await resolve(client.propose(**PROPOSAL))
    assert caught.value.code == code
    assert caught.value.status_code == 200
    assert not isinstance(caught.value, KeyError)


async def test_unknown_outcome_says_to_upgrade(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, decision_body("QUARANTINE"))))
    with pytest.raises(MalformedResponseError, match="upgrade aegis-sdk") as caught:
        await resolve(client.propose(**PROPOSAL))
    assert "'QUARANTINE'" in str(caught.value)


async def test_missing_field_is_named(make_client: Any) -> None:
    body = decision_body()
    del body["reason"]
    client = make_client(FakePlatform(reply(200, body)))
    with pytest.raises(MalformedResponseError, match="reason"):
        await resolve(client.propose(**PROPOSAL))


def test_errors_pickle() -> None:
    error = RateLimitError("Slow down", retry_after=2.0, status_code=429, code="rate_limited", request_id="req_1")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError
    assert (copy.retry_after, copy.status_code, copy.code, copy.request_id) == (2.0, 429, "rate_limited", "req_1")
    assert str(copy) == str(error)


def test_str_without_identifiers_is_the_message() -> None:
    assert str(AegisError("plain")) == "plain"
    assert "request_id" not in repr(AegisError("plain")).split("message")[0]
