"""The SDK against the real server (in-process and over a socket) and the fake platform, for every route of
the contract. A case the fake answers differently, as docs/testing.md documents, is marked `not_on_fake`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aegis_sdk import (
    AegisError,
    AuthenticationError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    GovernanceError,
    IdempotencyConflictError,
    InvalidRequestError,
    NotFoundError,
    ParameterValidationError,
    PermissionDeniedError,
    ReviewError,
    UnknownCapabilityError,
)

from .conftest import Backend


def _actor() -> dict[str, str]:
    return {"id": f"agent-{uuid.uuid4().hex[:8]}", "type": "ai-agent"}


def _query(sql: str, database: str = "production") -> dict[str, Any]:
    return {"capability": "database.query", "parameters": {"query": sql, "database": database}}


def _refund(amount: float, order: str = "ord_1") -> dict[str, Any]:
    return {"capability": "payments.refund", "parameters": {"order_id": order, "amount": amount, "currency": "EUR"}}


def test_health_and_ready(backend: Backend) -> None:
    client = backend.client()
    assert client.health().status == "ok"
    assert client.ready().status == "ready"


def test_each_outcome_and_get_returns_the_same_decision(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    expected = {
        "ALLOW": _query("SELECT * FROM users LIMIT 10"),
        "DENY": _query("DROP TABLE users"),
        "REQUIRE_CONFIRMATION": _refund(250),
        "ESCALATE": _refund(5000),
    }
    for outcome, action in expected.items():
        decision = client.propose(actor=actor, action=action, context={"session_id": "sess_contract"})
        assert decision.outcome == outcome, decision.reason
        assert decision.decision_id.startswith("dec_") and decision.audit_ref.startswith("aud_")
        assert 0.0 <= decision.risk_score <= 1.0 and decision.reason and decision.policy_ids
        fetched = client.decisions.get(decision.decision_id)
        assert (fetched.decision_id, fetched.outcome, fetched.risk_score) == (
            decision.decision_id,
            decision.outcome,
            decision.risk_score,
        )
    assert client.propose(actor=actor, action=_query("SELECT 1")).constraints == {"max_rows": 1000}


def test_confirmation_round_trip_replay_and_mismatch(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    asked = client.propose(actor=actor, action=_refund(400))
    assert asked.outcome == "REQUIRE_CONFIRMATION" and asked.confirmation_token and asked.expires_at
    allowed = client.confirm(asked)
    assert allowed.outcome == "ALLOW" and allowed.parent_decision_id == asked.decision_id
    with pytest.raises(ConfirmationUsedError) as replay:
        client.propose(actor=actor, action=_refund(400), confirmation_token=asked.confirmation_token)
    assert replay.value.status_code == 409 and replay.value.code == "confirmation_used"

    other = client.propose(actor=actor, action=_refund(400))
    with pytest.raises(ConfirmationMismatchError):
        client.propose(actor=actor, action=_refund(900), confirmation_token=other.confirmation_token)
    with pytest.raises(ConfirmationMismatchError):
        client.propose(actor=_actor(), action=_refund(400), confirmation_token=other.confirmation_token)
    # The same id with another type is another actor (human "alice" is not the agent "alice").
    as_human = {**actor, "type": "human"}
    with pytest.raises(ConfirmationMismatchError) as other_type:
        client.propose(actor=as_human, action=_refund(400), confirmation_token=other.confirmation_token)
    assert other_type.value.details["mismatched"] == ["actor"]
    # The mismatches did not burn the token: the right proposal still goes through once.
    assert client.confirm(other).outcome == "ALLOW"


def test_escalation_approved_and_denied_by_a_reviewer(backend: Backend) -> None:
    agent = backend.client(backend.create_key("agent", ["governance:propose", "governance:read"]))
    reviewer = backend.client(backend.create_key("carol-ops", ["governance:review", "governance:read"]))
    actor = _actor()

    pending = agent.propose(actor=actor, action=_refund(3000, "ord_a"))
    assert pending.outcome == "ESCALATE" and pending.review is not None and pending.review.status == "pending"
    assert pending.confirmation_token is None
    with pytest.raises(PermissionDeniedError):
        agent.decisions.review(pending.decision_id, approve=True)
    approved = reviewer.decisions.review(pending.decision_id, approve=True, note="checked")
    assert approved.review is not None and approved.review.status == "approved"
    assert approved.review.reviewer == "carol-ops" and approved.review.note == "checked"
    allowed = agent.wait_for_review(pending, timeout=10)
    assert allowed.outcome == "ALLOW" and allowed.parent_decision_id == pending.decision_id
    with pytest.raises(ReviewError):
        reviewer.decisions.review(pending.decision_id, approve=False)

    second = agent.propose(actor=actor, action=_refund(3000, "ord_b"))
    reviewer.decisions.review(second.decision_id, approve=False, note="no")
    final = agent.wait_for_review(second, timeout=10)
    assert final.outcome == "DENY" and final.review is not None and final.review.status == "denied"
    assert "carol-ops denied it" in final.reason


def test_escalation_expires_into_a_final_deny(backend: Backend) -> None:
    client = backend.client()
    waiting = client.propose(
        actor=_actor(), action={"capability": "deploy.production", "parameters": {"service": "s", "version": "1"}}
    )
    assert waiting.outcome == "ESCALATE"
    final = client.wait_for_review(waiting, timeout=20)
    assert final.outcome == "DENY" and final.review is not None and final.review.status == "expired"
    assert "no reviewer decided" in final.reason


def test_execution_report_once_and_only_after_allow(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    allowed = client.propose(actor=actor, action=_query("SELECT 2"))
    record = client.decisions.report_execution(
        allowed.decision_id, status="FAILED", error={"code": "Timeout", "message": "db slow"}
    )
    assert record.decision_id == allowed.decision_id and record.status == "FAILED"
    with pytest.raises(GovernanceError) as twice:
        client.decisions.report_execution(allowed.decision_id, status="SUCCESS")
    assert twice.value.status_code == 409
    denied = client.propose(actor=actor, action=_query("DELETE FROM users"))
    with pytest.raises(GovernanceError) as not_allowed:
        client.decisions.report_execution(denied.decision_id, status="SUCCESS")
    assert not_allowed.value.status_code == 409
    events = [r.event_type for r in client.audit.trail(allowed.decision_id).records]
    assert any("execution" in event for event in events), events


def test_list_decisions_pages_through_filters(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    made = [client.propose(actor=actor, action=_query(f"SELECT {i}")).decision_id for i in range(7)]
    listed = [d.decision_id for d in client.decisions.list(actor_id=actor["id"], limit=3)]
    assert sorted(listed) == sorted(made) and len(listed) == 7
    assert list(client.decisions.list(actor_id=actor["id"], outcome="DENY")) == []


def test_list_decisions_by_decision_id_and_actor_type(backend: Backend) -> None:
    """One exact question, as the FastAPI status route asks it: is this decision that actor's?"""
    client = backend.client()
    actor = _actor()
    mine = client.propose(actor=actor, action=_query("SELECT 1")).decision_id
    client.propose(actor=actor, action=_query("SELECT 2"))
    assert [d.decision_id for d in client.decisions.list(decision_id=mine)] == [mine]
    theirs = client.decisions.list(decision_id=mine, actor_id=actor["id"], actor_type="ai-agent")
    assert [d.decision_id for d in theirs] == [mine]
    assert list(client.decisions.list(decision_id=mine, actor_id=actor["id"], actor_type="human")) == []
    assert list(client.decisions.list(decision_id=mine, actor_id="someone-else")) == []
    with pytest.raises(InvalidRequestError, match="actor_type"):
        client.decisions.list(actor_type="robot")  # type: ignore[arg-type]
    answer = backend.raw().get("/api/v1/governance/decisions", params={"actor_type": "robot"})
    assert answer.status_code == 422 and "actor_type" in answer.text


def test_unknown_capability_and_bad_parameters(backend: Backend) -> None:
    client = backend.client()
    with pytest.raises(UnknownCapabilityError) as unknown:
        client.propose(actor=_actor(), action={"capability": "database.qurey", "parameters": {}})
    assert "database.query" in unknown.value.suggestions and unknown.value.request_id
    with pytest.raises(ParameterValidationError) as invalid:
        client.propose(actor=_actor(), action={"capability": "payments.refund", "parameters": {"order_id": "o"}})
    assert invalid.value.status_code == 422 and "amount" in str(invalid.value)


def test_idempotency_key_returns_the_stored_decision(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    key = f"idem-{uuid.uuid4()}"
    first = client.propose(actor=actor, action=_query("SELECT 3"), idempotency_key=key)
    again = client.propose(actor=actor, action=_query("SELECT 3"), idempotency_key=key)
    assert again.decision_id == first.decision_id
    assert len(list(client.decisions.list(actor_id=actor["id"]))) == 1
    with pytest.raises(IdempotencyConflictError):
        client.propose(actor=actor, action=_query("SELECT 4"), idempotency_key=key)


def test_authentication_and_scopes(backend: Backend) -> None:
    with pytest.raises(AuthenticationError) as bad_key:
        backend.client("aegis_sk_not-a-real-key").propose(actor=_actor(), action=_query("SELECT 1"))
    assert bad_key.value.status_code == 401
    reader = backend.client(backend.create_key("reader", ["governance:read"]))
    with pytest.raises(PermissionDeniedError) as no_scope:
        reader.propose(actor=_actor(), action=_query("SELECT 1"))
    assert no_scope.value.status_code == 403
    with pytest.raises(PermissionDeniedError):
        reader.audit.verify()


_NO_POLICY_ENGINE = (
    "it evaluates no policies: stored policies neither decide nor compile (docs/testing.md, What the fake does not do)"
)


def test_capabilities_and_policies_are_stored_and_served_back(backend: Backend) -> None:
    client = backend.client()
    suffix = uuid.uuid4().hex[:6]
    capability = {"name": f"crm.read_{suffix}", "description": "Read a CRM record", "risk_level": "low"}
    assert client.capabilities.create(capability).name == f"crm.read_{suffix}"
    assert client.capabilities.get(f"crm.read_{suffix}").risk_level == "low"
    assert f"crm.read_{suffix}" in {c.name for c in client.capabilities.list()}
    policy = {
        "name": f"crm-read-{suffix}",
        "rules": [{"id": "all", "capability": f"crm.read_{suffix}", "outcome": "ALLOW", "reason": "fine"}],
    }
    assert client.policies.create(policy).name == policy["name"]
    with pytest.raises(GovernanceError) as twice:
        client.policies.create(policy)
    assert twice.value.status_code == 409
    assert policy["name"] in {p.name for p in client.policies.list()}
    client.policies.update(policy["name"], {**policy, "description": "changed"})
    assert client.policies.get(policy["name"]).description == "changed"
    client.policies.delete(policy["name"])
    with pytest.raises(NotFoundError):
        client.policies.get(policy["name"])
    with pytest.raises(NotFoundError):
        client.policies.delete(policy["name"])


@pytest.mark.not_on_fake(_NO_POLICY_ENGINE)
def test_capabilities_and_policies_crud(backend: Backend) -> None:
    client = backend.client()
    names = {c.name for c in client.capabilities.list()}
    assert {"database.query", "payments.refund"} <= names
    assert client.capabilities.get("payments.refund").risk_level == "medium"
    suffix = uuid.uuid4().hex[:6]
    created = client.capabilities.create(
        {"name": f"crm.update_{suffix}", "description": "Update a CRM record", "risk_level": "low",
         "parameter_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}
    )  # fmt: skip
    assert created.name == f"crm.update_{suffix}"
    with pytest.raises(NotFoundError):
        client.capabilities.get("no.such.capability")

    policy = {
        "name": f"crm-{suffix}",
        "description": "CRM updates",
        "rules": [{"id": "all", "capability": f"crm.update_{suffix}", "outcome": "ALLOW", "reason": "CRM is fine"}],
    }
    assert client.policies.validate(policy).valid
    broken = {**policy, "rules": [{**policy["rules"][0], "condition": "action.parameters.id =="}]}
    report = client.policies.validate(broken)
    assert not report.valid and report.errors
    client.policies.create(policy)
    assert (
        client.propose(
            actor=_actor(), action={"capability": f"crm.update_{suffix}", "parameters": {"id": "c1"}}
        ).outcome
        == "ALLOW"
    )
    denying = {**policy, "rules": [{**policy["rules"][0], "outcome": "DENY", "reason": "frozen"}]}
    client.policies.update(policy["name"], denying)
    assert client.policies.get(policy["name"]).rules[0].outcome == "DENY"
    assert (
        client.propose(
            actor=_actor(), action={"capability": f"crm.update_{suffix}", "parameters": {"id": "c1"}}
        ).outcome
        == "DENY"
    )
    with pytest.raises(GovernanceError):
        client.policies.create(broken)
    client.policies.delete(policy["name"])
    with pytest.raises(NotFoundError):
        client.policies.get(policy["name"])
    assert (
        client.propose(
            actor=_actor(), action={"capability": f"crm.update_{suffix}", "parameters": {"id": "c1"}}
        ).outcome
        == "DENY"
    )


def test_audit_log_trail_and_verify(backend: Backend) -> None:
    client = backend.client()
    actor = _actor()
    asked = client.propose(actor=actor, action=_refund(300))
    allowed = client.confirm(asked)
    trail = client.audit.trail(allowed.decision_id)
    assert trail.decision_id == allowed.decision_id and trail.records
    records = list(client.audit.log(actor_id=actor["id"], limit=1))
    assert len(records) >= 2 and all(r.actor_id == actor["id"] for r in records)
    for record in records:
        assert len(record.hash) == 64 and len(record.previous_hash) == 64
    verification = client.audit.verify()
    assert verification.valid and verification.records_checked >= len(records) and verification.first_broken is None
    of_one = list(client.audit.log(decision_id=allowed.decision_id))
    assert of_one and {r.decision_id for r in of_one} == {allowed.decision_id}


@pytest.mark.not_on_fake("it serves no /metrics and no /openapi.json (docs/testing.md, What the fake does not do)")
def test_metrics_and_openapi_over_raw_http(backend: Backend) -> None:
    raw = backend.raw()
    metrics = raw.get("/metrics")
    assert metrics.status_code == 200 and "aegis" in metrics.text
    assert raw.get("/openapi.json").json()["paths"]["/api/v1/governance/propose"]


def test_error_envelope_over_raw_http(backend: Backend) -> None:
    raw = backend.raw()
    missing = raw.get("/api/v1/nowhere", headers={"X-Request-ID": "req-contract-1"})
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "req-contract-1"
    assert missing.json()["error"]["type"] == "not_found" and missing.json()["error"]["request_id"] == "req-contract-1"


async def test_async_client_mirrors_the_sync_one(backend: Backend) -> None:
    async with backend.async_client() as client:
        actor = _actor()
        asked = await client.propose(actor=actor, action=_refund(200))
        assert asked.outcome == "REQUIRE_CONFIRMATION"
        allowed = await client.confirm(asked)
        assert allowed.outcome == "ALLOW" and allowed.parent_decision_id == asked.decision_id
        listed = [d.decision_id async for d in client.decisions.list(actor_id=actor["id"], limit=1)]
        assert sorted(listed) == sorted([asked.decision_id, allowed.decision_id])
        assert (await client.audit.verify()).valid
        with pytest.raises(AegisError):
            await client.propose(actor=actor, action={"capability": "nope.nothing", "parameters": {}})


def test_the_sdk_page_examples_as_written_against_the_example_policies(backend: Backend) -> None:
    aegis = backend.client()
    decision = aegis.propose(
        actor={"id": "agent-001", "type": "ai-agent"},
        action={
            "capability": "database.query",
            "parameters": {
                "query": "SELECT * FROM users LIMIT 10",
                "database": "production",
            },
        },
        context={
            "session_id": "sess_abc123",
            "metadata": {"source": "customer-support-bot"},
        },
    )
    assert decision.outcome == "ALLOW"
    # The async example's placeholder query matches no rule: default-deny, said so, not an error.
    placeholder = aegis.propose(
        actor={"id": "agent-001", "type": "ai-agent"},
        action={"capability": "database.query", "parameters": {"query": "..."}},
    )
    assert placeholder.outcome == "DENY" and "default" in placeholder.reason.lower()
