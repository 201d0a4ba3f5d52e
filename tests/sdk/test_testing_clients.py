"""aegis_sdk.testing.FakePlatform behind the real AegisClient and AsyncAegisClient (each test runs on both)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aegis_sdk import (
    AegisClient,
    APIConnectionError,
    APITimeoutError,
    AsyncAegisClient,
    AuthenticationError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    Decision,
    ExecutionReportError,
    IdempotencyConflictError,
    NotFoundError,
    ParameterValidationError,
    PolicyError,
    RateLimitError,
    ReviewError,
    ServerError,
    UnknownCapabilityError,
)
from aegis_sdk.testing import DEFAULT_ENDPOINT, FakePlatform

AnyClient = AegisClient | AsyncAegisClient
ACTOR = {"id": "agent-7", "type": "ai-agent"}


async def resolve(value: Any) -> Any:
    """The result of a client call, awaited when the client is async."""
    if inspect.isawaitable(value):
        return await value
    return value


async def collect(iterator: Any) -> list[Any]:
    if hasattr(iterator, "__aiter__"):
        return [item async for item in iterator]
    return list(iterator)


async def propose(client: AnyClient, capability: str, **parameters: Any) -> Decision:
    action = {"capability": capability, "parameters": parameters}
    decision: Decision = await resolve(client.propose(ACTOR, action, {"session_id": "s-1"}))
    return decision


@pytest.fixture
def fake() -> FakePlatform:
    return FakePlatform()


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, fake: FakePlatform) -> AsyncIterator[AnyClient]:
    made: AnyClient = fake.client() if request.param == "sync" else fake.async_client()
    yield made
    if isinstance(made, AsyncAegisClient):
        await made.aclose()
    else:
        made.close()


def record_sleeps(client: AnyClient) -> list[float]:
    """Replace the client's sleep (the seam its retry loop uses) with a recorder."""
    sleeps: list[float] = []
    if isinstance(client, AsyncAegisClient):

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client._sleep = fake_sleep
    else:
        client._sleep = sleeps.append
    return sleeps


# -- wiring ------------------------------------------------------------------------------------------------------


def test_ready_made_clients_point_at_the_fake(fake: FakePlatform) -> None:
    with fake.client(retries=1) as client:
        assert client.endpoint == DEFAULT_ENDPOINT
        assert client.retries == 1
        assert client.retry_delay == 0.0
    with pytest.raises(TypeError, match="http_client"):
        fake.client(http_client=httpx.Client())


async def test_your_own_http_client_works_too(fake: FakePlatform) -> None:
    fake.script("*", "DENY")
    sync = AegisClient(
        endpoint="https://any-host.example", api_key="aegis_sk_x", http_client=httpx.Client(transport=fake.transport)
    )
    assert (await propose(sync, "x.y")).outcome == "DENY"
    async with AsyncAegisClient(
        endpoint="http://127.0.0.1:9", api_key="aegis_sk_x", http_client=httpx.AsyncClient(transport=fake.transport)
    ) as client:
        assert (await propose(client, "x.y")).outcome == "DENY"
    sync.close()


async def test_api_key_mismatch_is_an_authentication_error() -> None:
    fake = FakePlatform(api_key="aegis_sk_right")
    with fake.client() as good:
        assert good.propose(ACTOR, {"capability": "a.b"}).outcome == "ALLOW"
    with fake.client(api_key="aegis_sk_wrong") as bad, pytest.raises(AuthenticationError) as info:
        bad.propose(ACTOR, {"capability": "a.b"})
    assert info.value.code == "invalid_api_key"


# -- scripted outcomes and governance errors ---------------------------------------------------------------------


async def test_scripted_outcomes_reach_the_client(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("database.*", "DENY", reason="read-only agent", risk_score=0.9, constraints={"max_rows": 0})
    fake.script_sequence("email.send", ["ESCALATE", "ALLOW"])
    denied = await propose(client, "database.query", query="DELETE FROM users")
    assert (denied.outcome, denied.reason, denied.risk_score, denied.constraints) == (
        "DENY",
        "read-only agent",
        0.9,
        {"max_rows": 0},
    )
    assert not denied.allowed
    assert (await propose(client, "email.send", to="a")).outcome == "ESCALATE"
    assert (await propose(client, "email.send", to="b")).allowed
    fake.assert_proposed("database.query", query="DELETE FROM users")
    fake.assert_proposed("email.*", to="b")
    assert [p.context.session_id for p in fake.proposals] == ["s-1"] * 3


async def test_unknown_capability_and_bad_parameters_raise_governance_errors(fake: FakePlatform) -> None:
    fake = FakePlatform(strict_capabilities=True)
    fake.register_capability(
        "payments.refund",
        parameter_schema={"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}},
    )
    async with fake.async_client() as client:
        with pytest.raises(UnknownCapabilityError) as unknown:
            await propose(client, "payments.refunds", amount=1)
        assert unknown.value.details["suggestions"] == ["payments.refund"]
        with pytest.raises(ParameterValidationError) as invalid:
            await propose(client, "payments.refund", amount=-5)
        assert invalid.value.details["field"] == "amount"
    assert [r.event_type for r in fake.audit_log] == ["capability_registered", "proposal_rejected", "proposal_rejected"]


# -- confirmation ---------------------------------------------------------------------------------------------------


async def test_confirm_round_trip(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("payments.refund", "REQUIRE_CONFIRMATION", constraints={"max_amount": 100})
    pending = await propose(client, "payments.refund", amount=40)
    assert pending.outcome == "REQUIRE_CONFIRMATION" and pending.confirmation_token
    confirmed: Decision = await resolve(client.confirm(pending))
    assert confirmed.outcome == "ALLOW"
    assert confirmed.parent_decision_id == pending.decision_id
    assert confirmed.constraints == {"max_amount": 100}
    with pytest.raises(ConfirmationUsedError):
        await resolve(
            client.propose(
                ACTOR,
                {"capability": "payments.refund", "parameters": {"amount": 40}},
                {"session_id": "s-1"},
                confirmation_token=pending.confirmation_token,
            )
        )
    with pytest.raises(ConfirmationMismatchError):
        other = await propose(client, "payments.refund", amount=1)
        await resolve(
            client.propose(
                ACTOR,
                {"capability": "payments.refund", "parameters": {"amount": 2}},
                confirmation_token=other.confirmation_token,
            )
        )
    assert len(fake.proposals) == 5


# -- escalation and review ------------------------------------------------------------------------------------------


async def test_wait_for_review_after_the_fake_approves(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("payments.refund", "ESCALATE")
    pending = await propose(client, "payments.refund", amount=900)
    assert pending.review is not None and pending.review.status == "pending"
    fake.approve(pending.decision_id, reviewer="alice", note="ok")
    allowed: Decision = await resolve(client.wait_for_review(pending, timeout=5))
    assert allowed.outcome == "ALLOW"
    assert allowed.parent_decision_id == pending.decision_id
    assert "approved by alice" in allowed.reason
    review = fake.decisions[pending.decision_id].review
    assert review is not None and (review.status, review.note) == ("approved", "ok")
    polls = [r for r in fake.requests if r.method == "GET"]
    assert polls and all("wait" in r.query for r in polls)


async def test_wait_for_review_with_auto_review(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("payments.*", "ESCALATE", auto_review="approve")
    fake.script("payments.wire", "ESCALATE", auto_review="deny")
    approved: Decision = await resolve(client.wait_for_review(await propose(client, "payments.refund", amount=1)))
    assert approved.outcome == "ALLOW"
    denied: Decision = await resolve(client.wait_for_review(await propose(client, "payments.wire", amount=1)))
    assert denied.review is not None and denied.review.status == "denied"
    assert not denied.allowed


async def test_review_through_the_client_then_wait(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("*", "ESCALATE")
    pending = await propose(client, "db.migrate", version=3)
    reviewed: Decision = await resolve(client.decisions.review(pending.decision_id, approve=True, note="go"))
    assert reviewed.review is not None and (reviewed.review.status, reviewed.review.reviewer) == (
        "approved",
        "fake-key",
    )
    allowed: Decision = await resolve(client.wait_for_review(pending))
    assert allowed.allowed
    with pytest.raises(ReviewError):
        await resolve(client.decisions.review(pending.decision_id, approve=False))


async def test_expired_review_is_final(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("*", "ESCALATE", review_timeout_seconds=60)
    pending = await propose(client, "db.migrate")
    fake.advance(61)
    final: Decision = await resolve(client.wait_for_review(pending))
    assert final.review is not None and final.review.status == "expired"
    assert final.outcome == "DENY" and not final.allowed


# -- failure injection and retries -------------------------------------------------------------------------------


async def test_retries_after_503_decide_once_with_one_idempotency_key(client: AnyClient, fake: FakePlatform) -> None:
    sleeps = record_sleeps(client)
    fake.fail_next(503, times=2, retry_after=3)
    decision = await propose(client, "payments.refund", amount=1)
    assert decision.allowed
    assert [r.status_code for r in fake.requests] == [503, 503, 200]
    assert len({r.headers["idempotency-key"] for r in fake.requests}) == 1
    assert len(fake.proposals) == 1 and len(fake.decisions) == 1
    assert sleeps == [3.0, 3.0]


async def test_exhausted_retries_raise_and_nothing_is_decided(client: AnyClient, fake: FakePlatform) -> None:
    record_sleeps(client)
    fake.fail_next(500, times=4)
    with pytest.raises(ServerError) as info:
        await propose(client, "payments.refund")
    assert info.value.code == "internal_error"
    assert len(fake.requests) == 4 and fake.decisions == {}


async def test_rate_limit_retry_after_is_honoured(client: AnyClient, fake: FakePlatform) -> None:
    sleeps = record_sleeps(client)
    fake.fail_next(429, times=4, retry_after=7)
    with pytest.raises(RateLimitError) as info:
        await propose(client, "payments.refund")
    assert info.value.retry_after == 7
    assert sleeps == [7.0, 7.0, 7.0]


async def test_connect_errors_and_timeouts_fail_closed(client: AnyClient, fake: FakePlatform) -> None:
    record_sleeps(client)
    fake.fail_with_connect_error(times=4)
    with pytest.raises(APIConnectionError):
        await propose(client, "payments.refund")
    fake.fail_with_timeout(times=4)
    with pytest.raises(APITimeoutError):
        await propose(client, "payments.refund")
    fake.fail_with_connect_error(times=1)
    assert (await propose(client, "payments.refund")).allowed
    assert fake.proposals and len(fake.proposals) == 1


async def test_explicit_idempotency_key_conflict(client: AnyClient, fake: FakePlatform) -> None:
    first = await resolve(client.propose(ACTOR, {"capability": "a.b", "parameters": {"n": 1}}, idempotency_key="k1"))
    again = await resolve(client.propose(ACTOR, {"capability": "a.b", "parameters": {"n": 1}}, idempotency_key="k1"))
    assert again == first
    with pytest.raises(IdempotencyConflictError):
        await resolve(client.propose(ACTOR, {"capability": "a.b", "parameters": {"n": 2}}, idempotency_key="k1"))


# -- resources ---------------------------------------------------------------------------------------------------------


async def test_decision_resources(client: AnyClient, fake: FakePlatform) -> None:
    fake.script("x.denied", "DENY")
    made = [await propose(client, "x.allowed", n=n) for n in range(5)]
    denied = await propose(client, "x.denied")
    assert (await resolve(client.decisions.get(made[0].decision_id))) == made[0]
    listed = await collect(client.decisions.list(limit=2))
    assert [d.decision_id for d in listed] == [denied.decision_id, *[d.decision_id for d in reversed(made)]]
    only_allowed = await collect(client.decisions.list(outcome="ALLOW", capability="x.allowed"))
    assert len(only_allowed) == 5
    record = await resolve(
        client.decisions.report_execution(made[0].decision_id, status="SUCCESS", result={"rows": 3}, duration_ms=4)
    )
    assert record.decision_id == made[0].decision_id
    assert fake.executions[made[0].decision_id].result == {"rows": 3}
    with pytest.raises(ExecutionReportError):
        await resolve(client.decisions.report_execution(denied.decision_id, status="SUCCESS"))
    with pytest.raises(NotFoundError):
        await resolve(client.decisions.get("dec_missing"))


async def test_registry_policy_audit_and_health_resources(client: AnyClient, fake: FakePlatform) -> None:
    created = await resolve(client.capabilities.create({"name": "files.delete", "risk_level": "high"}))
    assert created.name == "files.delete"
    assert [c.name for c in await resolve(client.capabilities.list())] == ["files.delete"]
    assert (await resolve(client.capabilities.get("files.delete"))).risk_level == "high"

    policy = {"name": "files", "rules": [{"capability": "files.*", "outcome": "ESCALATE"}]}
    assert (await resolve(client.policies.create(policy))).name == "files"
    with pytest.raises(PolicyError):
        await resolve(client.policies.create(policy))
    updated = await resolve(client.policies.update("files", {**policy, "description": "v2"}))
    assert updated.description == "v2"
    assert (await resolve(client.policies.get("files"))).description == "v2"
    assert [p.name for p in await resolve(client.policies.list())] == ["files"]
    assert (await resolve(client.policies.validate(policy))).valid
    await resolve(client.policies.delete("files"))
    assert await resolve(client.policies.list()) == []

    decision = await propose(client, "files.delete", path="/tmp/x")
    trail = await resolve(client.audit.trail(decision.decision_id))
    assert [r.event_type for r in trail.records] == ["proposal", "decision"]
    records = await collect(client.audit.log(limit=2))
    assert [r.sequence for r in records] == list(range(1, len(fake.audit_log) + 1))
    assert [r.event_type for r in await collect(client.audit.log(event_type="decision"))] == ["decision"]
    verification = await resolve(client.audit.verify())
    assert verification.valid and verification.records_checked == len(fake.audit_log)

    assert (await resolve(client.health())).status == "ok"
    assert (await resolve(client.ready())).status == "ready"


async def test_not_ready_platform_raises_a_server_error(client: AnyClient, fake: FakePlatform) -> None:
    fake.fail_next(503, path="/api/v1/ready")
    with pytest.raises(ServerError) as info:
        await resolve(client.ready())
    assert info.value.code == "unavailable"
    assert len(fake.requests) == 1  # readiness is a snapshot: no retries
    assert (await resolve(client.health())).status == "ok"
