"""aegis_sdk.testing.FakePlatform driven with raw httpx: every route and flow of the v1 contract."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from aegis_sdk.models import Capability, Decision, ErrorEnvelope, Policy, Proposal
from aegis_sdk.testing import DEFAULT_ENDPOINT, FakePlatform, ScriptedOutcome, _audit

PROPOSE = "/api/v1/governance/propose"


def body(capability: str = "payments.refund", actor: str = "agent-1", **parameters: Any) -> dict[str, Any]:
    return {
        "actor": {"id": actor, "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1", "metadata": {"source": "tests"}},
    }


def decision_of(response: httpx.Response) -> Decision:
    assert response.status_code == 200, response.text
    return Decision(**response.json())


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    envelope = ErrorEnvelope.model_validate(response.json())
    assert envelope.error.code == code, response.text
    assert envelope.error.request_id == response.headers["x-request-id"]
    assert envelope.error.message
    details: dict[str, Any] = envelope.error.details
    return details


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def fake() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
def http(fake: FakePlatform) -> Iterator[httpx.Client]:
    with fake.http_client() as client:
        yield client


# -- outcomes and scripting ----------------------------------------------------------------------------------


def test_unscripted_capability_gets_the_default_outcome(http: httpx.Client, fake: FakePlatform) -> None:
    decision = decision_of(http.post(PROPOSE, json=body(amount=5)))
    assert decision.outcome == "ALLOW"
    assert decision.decision_id.startswith("dec_")
    assert decision.audit_ref.startswith("aud_")
    assert decision.timestamp.endswith("Z")
    assert "payments.refund" in decision.reason
    assert fake.decisions == {decision.decision_id: decision}
    assert fake.last_decision == decision


def test_default_outcome_is_configurable() -> None:
    fake = FakePlatform(default_outcome="DENY")
    with fake.http_client() as http:
        assert decision_of(http.post(PROPOSE, json=body())).outcome == "DENY"


def test_default_outcome_must_be_an_outcome() -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        FakePlatform(default_outcome="MAYBE")  # type: ignore[arg-type]


def test_script_sets_outcome_reason_risk_and_constraints(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("database.query", "DENY", reason="no prod writes", risk_score=0.7, constraints={"max_rows": 10})
    decision = decision_of(http.post(PROPOSE, json=body("database.query", query="DROP TABLE x")))
    assert (decision.outcome, decision.reason, decision.risk_score) == ("DENY", "no prod writes", 0.7)
    assert decision.constraints == {"max_rows": 10}
    assert decision.policy_ids == ["fake/database.query"]


def test_exact_script_beats_glob_and_last_registered_wins_among_equals(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.refund", "DENY")
    fake.script("payments.*", "ESCALATE")
    fake.script("*", "REQUIRE_CONFIRMATION")
    assert decision_of(http.post(PROPOSE, json=body("payments.refund"))).outcome == "DENY"
    assert decision_of(http.post(PROPOSE, json=body("payments.charge"))).outcome == "ESCALATE"
    assert decision_of(http.post(PROPOSE, json=body("email.send"))).outcome == "REQUIRE_CONFIRMATION"
    fake.script("payments.*", "ALLOW")
    assert decision_of(http.post(PROPOSE, json=body("payments.charge"))).outcome == "ALLOW"


def test_script_can_be_a_function_of_the_proposal(http: httpx.Client, fake: FakePlatform) -> None:
    def by_amount(proposal: Proposal) -> str:
        return "ESCALATE" if proposal.action.parameters["amount"] > 100 else "ALLOW"

    fake.script("payments.refund", by_amount, reason="amount rule")  # type: ignore[arg-type]
    assert decision_of(http.post(PROPOSE, json=body(amount=5))).outcome == "ALLOW"
    big = decision_of(http.post(PROPOSE, json=body(amount=500)))
    assert (big.outcome, big.reason) == ("ESCALATE", "amount rule")


def test_script_sequence_answers_in_order_then_falls_through(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.*", "DENY")
    fake.script_sequence("payments.refund", ["ALLOW", ScriptedOutcome("ESCALATE", reason="second")])
    outcomes = [decision_of(http.post(PROPOSE, json=body(n=i))) for i in range(3)]
    assert [d.outcome for d in outcomes] == ["ALLOW", "ESCALATE", "DENY"]
    assert outcomes[1].reason == "second"


def test_script_arguments_are_checked_when_scripting(fake: FakePlatform) -> None:
    with pytest.raises(ValueError, match="risk_score"):
        fake.script("x", "ALLOW", risk_score=1.5)
    with pytest.raises(ValueError, match="auto_review only applies to ESCALATE"):
        fake.script("x", "ALLOW", auto_review="approve")
    with pytest.raises(TypeError, match="either a ScriptedOutcome or keyword options"):
        fake.script("x", ScriptedOutcome("DENY"), reason="twice")
    with pytest.raises(ValueError, match="at least one outcome"):
        fake.script_sequence("x", [])


# -- capabilities: strict mode and parameter schemas ---------------------------------------------------------


def test_strict_mode_answers_unknown_capability_with_suggestions() -> None:
    fake = FakePlatform(strict_capabilities=True, capabilities=["payments.refund", "payments.charge"])
    with fake.http_client() as http:
        details = error_of(http.post(PROPOSE, json=body("payments.refnd")), 404, "unknown_capability")
        assert details["suggestions"][0] == "payments.refund"
        assert http.post(PROPOSE, json=body("payments.refund")).status_code == 200
    assert [p.action.capability for p in fake.proposals] == ["payments.refnd", "payments.refund"]
    assert len(fake.decisions) == 1


def test_registered_schema_checks_parameters_without_echoing_values(http: httpx.Client, fake: FakePlatform) -> None:
    fake.register_capability(
        "payments.refund",
        parameter_schema={
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number", "maximum": 1000}, "note": {"type": "string"}},
            "additionalProperties": False,
        },
    )
    response = http.post(PROPOSE, json=body(amount=123456789, extra="secret-value"))
    details = error_of(response, 422, "invalid_parameters")
    assert details["field"] == "amount"
    assert {e["field"] for e in details["errors"]} == {"amount", "extra"}
    assert "123456789" not in response.text
    assert "secret-value" not in response.text
    error_of(http.post(PROPOSE, json=body(note="x")), 422, "invalid_parameters")
    assert decision_of(http.post(PROPOSE, json=body(amount=10))).outcome == "ALLOW"


def test_capability_routes(http: httpx.Client, fake: FakePlatform) -> None:
    created = http.post("/api/v1/capabilities", json={"name": "email.send", "risk_level": "low"})
    assert created.status_code == 201
    assert Capability.model_validate(created.json()).risk_level == "low"
    listed = http.get("/api/v1/capabilities").json()
    assert [c["name"] for c in listed] == ["email.send"]
    assert http.get("/api/v1/capabilities/email.send").json()["name"] == "email.send"
    error_of(http.get("/api/v1/capabilities/nope"), 404, "not_found")
    error_of(http.post("/api/v1/capabilities", json={"name": "bad name!"}), 422, "invalid_request")
    replaced = http.post("/api/v1/capabilities", json={"name": "email.send", "risk_level": "high"})
    assert replaced.status_code == 200 and replaced.json()["risk_level"] == "high"
    assert "email.send" in fake.capabilities


# -- confirmation round trip ---------------------------------------------------------------------------------


def test_confirmation_round_trip(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.refund", "REQUIRE_CONFIRMATION", constraints={"max_amount": 50})
    first = decision_of(http.post(PROPOSE, json=body(amount=40)))
    assert first.outcome == "REQUIRE_CONFIRMATION"
    assert first.confirmation_token and first.expires_at
    again = {**body(amount=40), "confirmation_token": first.confirmation_token}
    confirmed = decision_of(http.post(PROPOSE, json=again))
    assert confirmed.outcome == "ALLOW"
    assert confirmed.parent_decision_id == first.decision_id
    assert confirmed.constraints == {"max_amount": 50}
    assert confirmed.confirmation_token is None
    details = error_of(http.post(PROPOSE, json=again), 409, "confirmation_used")
    assert details["parent_decision_id"] == first.decision_id
    assert first.decision_id in confirmed.reason
    assert len(fake.proposals) == 3
    assert fake.proposals[1].confirmation_token == first.confirmation_token


@pytest.mark.parametrize(
    ("change", "mismatched"),
    [
        ({"actor": {"id": "agent-2", "type": "ai-agent"}}, "actor"),
        ({"action": {"capability": "payments.refund", "parameters": {"amount": 41}}}, "parameters"),
        ({"action": {"capability": "payments.charge", "parameters": {"amount": 40}}}, "capability"),
    ],
)
def test_token_is_bound_to_actor_capability_and_parameters(
    http: httpx.Client, fake: FakePlatform, change: dict[str, Any], mismatched: str
) -> None:
    fake.script("payments.*", "REQUIRE_CONFIRMATION")
    token = decision_of(http.post(PROPOSE, json=body(amount=40))).confirmation_token
    details = error_of(
        http.post(PROPOSE, json={**body(amount=40), **change, "confirmation_token": token}),
        409,
        "confirmation_mismatch",
    )
    assert details["mismatched"] == [mismatched]
    # a mismatch does not burn the token
    assert decision_of(http.post(PROPOSE, json={**body(amount=40), "confirmation_token": token})).outcome == "ALLOW"


def test_token_parameters_compare_canonically(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.refund", "REQUIRE_CONFIRMATION")
    token = decision_of(http.post(PROPOSE, json=body(a=1, b=2))).confirmation_token
    reordered = body()
    reordered["action"]["parameters"] = {"b": 2, "a": 1}
    assert decision_of(http.post(PROPOSE, json={**reordered, "confirmation_token": token})).outcome == "ALLOW"


def test_expired_and_unknown_tokens(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.refund", "REQUIRE_CONFIRMATION")
    token = decision_of(http.post(PROPOSE, json=body(amount=1))).confirmation_token
    fake.advance(301)
    error_of(http.post(PROPOSE, json={**body(amount=1), "confirmation_token": token}), 409, "confirmation_expired")
    error_of(
        http.post(PROPOSE, json={**body(amount=1), "confirmation_token": "ctok_forged"}), 409, "confirmation_invalid"
    )
    rejected = [r for r in fake.audit_log if r.event_type == "confirmation_rejected"]
    assert [r.payload["code"] for r in rejected] == ["confirmation_expired", "confirmation_invalid"]


# -- escalation and review -----------------------------------------------------------------------------------


def test_escalation_is_pending_until_approved_then_token_confirms(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("payments.refund", "ESCALATE", review_timeout_seconds=600)
    pending = decision_of(http.post(PROPOSE, json=body(amount=900)))
    assert pending.outcome == "ESCALATE"
    assert pending.review is not None and pending.review.status == "pending"
    assert pending.confirmation_token is None
    assert pending.expires_at is not None
    assert parse_time(pending.expires_at) - parse_time(pending.timestamp) == timedelta(seconds=600)
    assert fake.pending_reviews == [pending]

    fake.approve(pending.decision_id, reviewer="alice", note="looks fine")
    seen = decision_of(http.get(f"/api/v1/governance/decisions/{pending.decision_id}", params={"wait": 30}))
    assert seen.review is not None
    assert (seen.review.status, seen.review.reviewer, seen.review.note) == ("approved", "alice", "looks fine")
    assert seen.review.resolved_at is not None
    assert seen.confirmation_token

    confirmed = decision_of(
        http.post(PROPOSE, json={**body(amount=900), "confirmation_token": seen.confirmation_token})
    )
    assert (confirmed.outcome, confirmed.parent_decision_id) == ("ALLOW", pending.decision_id)
    assert fake.pending_reviews == []


def test_review_route_approves_and_denies_as_the_key_name() -> None:
    fake = FakePlatform(key_name="ops-team")
    fake.script("*", "ESCALATE")
    with fake.http_client() as http:
        one = decision_of(http.post(PROPOSE, json=body(n=1)))
        two = decision_of(http.post(PROPOSE, json=body(n=2)))
        approved = decision_of(
            http.post(f"/api/v1/governance/decisions/{one.decision_id}/review", json={"approve": True})
        )
        assert approved.review is not None and (approved.review.status, approved.review.reviewer) == (
            "approved",
            "ops-team",
        )
        denied = decision_of(
            http.post(f"/api/v1/governance/decisions/{two.decision_id}/review", json={"approve": False, "note": "no"})
        )
        assert denied.review is not None and (denied.review.status, denied.review.note) == ("denied", "no")
        assert denied.confirmation_token is None
        error_of(
            http.post(f"/api/v1/governance/decisions/{two.decision_id}/review", json={"approve": True}),
            409,
            "not_pending",
        )
        error_of(http.post("/api/v1/governance/decisions/dec_nope/review", json={"approve": True}), 404, "not_found")
        error_of(http.post(f"/api/v1/governance/decisions/{one.decision_id}/review", json={}), 422, "invalid_request")


def test_review_of_a_non_escalation_is_not_pending(http: httpx.Client, fake: FakePlatform) -> None:
    allowed = decision_of(http.post(PROPOSE, json=body()))
    error_of(
        http.post(f"/api/v1/governance/decisions/{allowed.decision_id}/review", json={"approve": True}),
        409,
        "not_pending",
    )
    with pytest.raises(ValueError, match="not awaiting review"):
        fake.approve(allowed.decision_id)
    with pytest.raises(LookupError, match="dec_missing"):
        fake.deny("dec_missing")


def test_review_deadline_expires_as_the_clock_advances(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("*", "ESCALATE")
    pending = decision_of(http.post(PROPOSE, json=body()))
    fake.advance(timedelta(seconds=3599))
    assert fake.decisions[pending.decision_id].review == pending.review
    fake.advance(1)
    expired = decision_of(http.get(f"/api/v1/governance/decisions/{pending.decision_id}"))
    assert expired.review is not None and expired.review.status == "expired"
    with pytest.raises(ValueError, match="not awaiting review"):
        fake.expire(pending.decision_id)


def test_expire_and_deny_by_hand(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("*", "ESCALATE")
    one = decision_of(http.post(PROPOSE, json=body(n=1)))
    two = decision_of(http.post(PROPOSE, json=body(n=2)))
    expired = fake.expire(one.decision_id)
    assert expired.review is not None and expired.review.status == "expired"
    denied = fake.deny(two.decision_id, note="too risky")
    assert denied.review is not None and (denied.review.status, denied.review.note) == ("denied", "too risky")
    # As on the server, a denied or expired escalation is the final DENY.
    assert (expired.outcome, denied.outcome) == ("DENY", "DENY")
    assert decision_of(http.get(f"/api/v1/governance/decisions/{one.decision_id}")).outcome == "DENY"


@pytest.mark.parametrize(("auto", "status"), [("approve", "approved"), ("deny", "denied"), ("expire", "expired")])
def test_auto_review_resolves_on_first_read(http: httpx.Client, fake: FakePlatform, auto: str, status: str) -> None:
    fake.script("*", "ESCALATE", auto_review=auto)  # type: ignore[arg-type]
    pending = decision_of(http.post(PROPOSE, json=body()))
    assert pending.review is not None and pending.review.status == "pending"
    read = decision_of(http.get(f"/api/v1/governance/decisions/{pending.decision_id}", params={"wait": "5"}))
    assert read.review is not None and read.review.status == status
    assert (read.confirmation_token is not None) == (auto == "approve")


def test_wait_must_be_a_non_negative_number(http: httpx.Client) -> None:
    decision = decision_of(http.post(PROPOSE, json=body()))
    url = f"/api/v1/governance/decisions/{decision.decision_id}"
    error_of(http.get(url, params={"wait": "soon"}), 422, "invalid_request")
    error_of(http.get(url, params={"wait": "-1"}), 422, "invalid_request")
    assert http.get(url, params={"wait": "600"}).status_code == 200
    error_of(http.get("/api/v1/governance/decisions/dec_unknown"), 404, "not_found")


# -- idempotency ---------------------------------------------------------------------------------------------


def test_idempotency_key_returns_the_same_decision_once(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script_sequence("payments.refund", ["DENY", "ALLOW"])
    headers = {"Idempotency-Key": "key-1"}
    first = decision_of(http.post(PROPOSE, json=body(amount=1), headers=headers))
    again = decision_of(http.post(PROPOSE, json=body(amount=1), headers=headers))
    assert again == first
    assert len(fake.proposals) == 1 and len(fake.decisions) == 1
    replay = http.post(PROPOSE, json=body(amount=1), headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    details = error_of(http.post(PROPOSE, json=body(amount=2), headers=headers), 409, "idempotency_conflict")
    assert details["decision_id"] == first.decision_id
    # the repeat consumed no scripted outcome
    assert decision_of(http.post(PROPOSE, json=body(amount=1))).outcome == "ALLOW"
    assert len([r for r in fake.requests if r.headers.get("idempotency-key") == "key-1"]) == 4


def test_empty_token_is_no_token_and_overlong_idempotency_key_is_rejected(
    http: httpx.Client, fake: FakePlatform
) -> None:
    assert decision_of(http.post(PROPOSE, json={**body(), "confirmation_token": ""})).parent_decision_id is None
    details = error_of(http.post(PROPOSE, json=body(), headers={"Idempotency-Key": "k" * 256}), 422, "invalid_request")
    assert details["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_idempotency_keys_are_scoped_by_api_key(fake: FakePlatform) -> None:
    with fake.http_client() as one, fake.http_client(headers={"Authorization": "Bearer aegis_sk_other"}) as two:
        headers = {"Idempotency-Key": "shared"}
        first = decision_of(one.post(PROPOSE, json=body(amount=1), headers=headers))
        second = decision_of(two.post(PROPOSE, json=body(amount=2), headers=headers))
    assert first.decision_id != second.decision_id


# -- execution reports ---------------------------------------------------------------------------------------


def test_execution_report_once_and_only_after_allow(http: httpx.Client, fake: FakePlatform) -> None:
    allowed = decision_of(http.post(PROPOSE, json=body()))
    url = f"/api/v1/governance/decisions/{allowed.decision_id}/execution"
    report = {"status": "FAILED", "error": {"code": "timeout", "message": "bank API"}, "duration_ms": 12.5}
    recorded = http.post(url, json=report)
    assert recorded.status_code == 201
    assert recorded.json()["decision_id"] == allowed.decision_id
    assert recorded.json()["audit_ref"].startswith("aud_")
    assert fake.executions[allowed.decision_id].error is not None
    error_of(http.post(url, json={"status": "SUCCESS"}), 409, "already_reported")
    fake.script("x.denied", "DENY")
    denied = decision_of(http.post(PROPOSE, json=body("x.denied")))
    details = error_of(
        http.post(f"/api/v1/governance/decisions/{denied.decision_id}/execution", json={"status": "SUCCESS"}),
        409,
        "not_allowed",
    )
    assert details["outcome"] == "DENY"
    error_of(http.post(url, json={"status": "DONE"}), 422, "invalid_request")
    error_of(http.post("/api/v1/governance/decisions/dec_x/execution", json={"status": "SUCCESS"}), 404, "not_found")


# -- listing decisions ---------------------------------------------------------------------------------------


def test_decision_list_filters_and_pages_newest_first(http: httpx.Client, fake: FakePlatform) -> None:
    fake.script("db.*", "ESCALATE")
    made = [decision_of(http.post(PROPOSE, json=body("db.query" if i % 2 else "email.send", n=i))) for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/v1/governance/decisions", params=params).json()
        seen.extend(item["decision_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [d.decision_id for d in reversed(made)]
    pending = http.get("/api/v1/governance/decisions", params={"review_status": "pending"}).json()["items"]
    assert len(pending) == 3
    allowed = http.get("/api/v1/governance/decisions", params={"outcome": "ALLOW", "capability": "email.send"})
    assert len(allowed.json()["items"]) == 4
    assert http.get("/api/v1/governance/decisions", params={"actor_id": "nobody"}).json()["items"] == []
    later = (fake.now + timedelta(seconds=1)).isoformat()
    assert http.get("/api/v1/governance/decisions", params={"since": later}).json()["items"] == []
    assert len(http.get("/api/v1/governance/decisions", params={"until": later}).json()["items"]) == 7


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "x"},
        {"outcome": "MAYBE"},
        {"since": "yesterday"},
    ],
)
def test_decision_list_rejects_bad_query(http: httpx.Client, params: dict[str, str]) -> None:
    details = error_of(http.get("/api/v1/governance/decisions", params=params), 422, "invalid_request")
    assert details["errors"][0]["loc"] == ["query", next(iter(params))]


@pytest.mark.parametrize("path", ["/api/v1/governance/decisions", "/api/v1/audit/log"])
def test_lists_reject_a_foreign_cursor(http: httpx.Client, path: str) -> None:
    assert error_of(http.get(path, params={"cursor": "garbage!"}), 422, "invalid_request") == {"field": "cursor"}


# -- policies ------------------------------------------------------------------------------------------------


def test_policy_crud_and_validation(http: httpx.Client, fake: FakePlatform) -> None:
    policy = {"name": "payments", "rules": [{"capability": "payments.*", "outcome": "ESCALATE", "condition": "true"}]}
    assert http.post("/api/v1/policies", json=policy).status_code == 201
    error_of(http.post("/api/v1/policies", json=policy), 409, "policy_conflict")
    assert [p["name"] for p in http.get("/api/v1/policies").json()] == ["payments"]
    updated = http.put("/api/v1/policies/payments", json={"name": "payments", "rules": [], "description": "off"})
    assert updated.status_code == 200 and updated.json()["description"] == "off"
    assert fake.policies["payments"].description == "off"
    details = error_of(http.put("/api/v1/policies/payments", json={"name": "other"}), 422, "invalid_request")
    assert details["errors"][0]["loc"] == ["body", "name"]
    assert http.put("/api/v1/policies/fresh", json={"name": "fresh"}).status_code == 201
    duplicate_rules = {"name": "dup", "rules": [{"id": "r", "capability": "*", "outcome": "DENY"}] * 2}
    details = error_of(http.post("/api/v1/policies", json=duplicate_rules), 422, "invalid_policy")
    assert details["errors"][0]["rule"] == "r"

    assert http.post("/api/v1/policies/validate", json=policy).json() == {"valid": True, "errors": []}
    invalid = http.post("/api/v1/policies/validate", json=duplicate_rules).json()
    assert invalid["valid"] is False and invalid["errors"][0]["policy"] == "dup"
    error_of(http.post("/api/v1/policies/validate", json={"name": "x", "rules": [{}]}), 422, "invalid_request")
    assert "dup" not in fake.policies

    assert http.get("/api/v1/policies/fresh").json()["name"] == "fresh"
    assert http.delete("/api/v1/policies/payments").status_code == 204
    error_of(http.get("/api/v1/policies/payments"), 404, "not_found")
    error_of(http.delete("/api/v1/policies/payments"), 404, "not_found")


def test_add_policy_and_constructor_policies() -> None:
    fake = FakePlatform(policies=[Policy(name="base")])
    fake.add_policy({"name": "extra", "rules": [{"capability": "*", "outcome": "DENY"}]})
    assert list(fake.policies) == ["base", "extra"]
    fake.reset()
    assert list(fake.policies) == ["base"]


# -- audit ---------------------------------------------------------------------------------------------------


def test_audit_log_trail_and_verify(http: httpx.Client, fake: FakePlatform) -> None:
    fake.register_capability(
        "users.update", parameter_schema={"properties": {"password": {"type": "string", "x-sensitive": True}}}
    )
    fake.script("users.update", "REQUIRE_CONFIRMATION")
    first = decision_of(http.post(PROPOSE, json=body("users.update", password="hunter2", user="bob")))
    confirmed = decision_of(
        http.post(
            PROPOSE,
            json={
                **body("users.update", password="hunter2", user="bob"),
                "confirmation_token": first.confirmation_token,
            },
        )
    )
    http.post(f"/api/v1/governance/decisions/{confirmed.decision_id}/execution", json={"status": "SUCCESS"})

    trail = http.get(f"/api/v1/audit/log/{first.decision_id}").json()
    assert [r["event_type"] for r in trail["records"]] == ["proposal", "decision", "confirmation"]
    assert trail["records"][1]["audit_ref"] == first.audit_ref
    child = http.get(f"/api/v1/audit/log/{confirmed.decision_id}").json()["records"]
    assert [r["event_type"] for r in child] == ["proposal", "decision", "execution"]
    assert "hunter2" not in json.dumps(fake.audit_log[-1].model_dump()) + str([r.payload for r in fake.audit_log])
    assert trail["records"][0]["payload"]["parameters"]["password"].startswith("sha256:")

    log = http.get("/api/v1/audit/log", params={"limit": 3}).json()
    assert [r["sequence"] for r in log["items"]] == [1, 2, 3]
    rest = http.get("/api/v1/audit/log", params={"cursor": log["next_cursor"]}).json()
    assert rest["items"][0]["sequence"] == 4 and rest["next_cursor"] is None
    assert rest["items"][0]["previous_hash"] == log["items"][-1]["hash"]
    assert log["items"][0]["previous_hash"] == "0" * 64
    decisions_only = http.get("/api/v1/audit/log", params={"outcome": "ALLOW"}).json()["items"]
    assert {r["event_type"] for r in decisions_only} == {"decision"}
    by_type = http.get("/api/v1/audit/log", params={"event_type": "confirmation"}).json()["items"]
    assert [r["decision_id"] for r in by_type] == [first.decision_id]
    one = http.get("/api/v1/audit/log", params={"decision_id": confirmed.decision_id}).json()["items"]
    assert len(one) == 3

    verified = http.get("/api/v1/audit/verify").json()
    assert verified["valid"] is True and verified["records_checked"] == len(fake.audit_log)
    assert verified["head_hash"] == fake.audit_log[-1].hash
    error_of(http.get("/api/v1/audit/log/dec_unknown"), 404, "not_found")


def test_audit_verify_reports_a_tampered_record(http: httpx.Client, fake: FakePlatform) -> None:
    for n in range(3):
        http.post(PROPOSE, json=body(n=n))
    records = fake._state.audit
    records[2] = records[2].model_copy(update={"outcome": "DENY"})
    verified = http.get("/api/v1/audit/verify").json()
    assert verified["valid"] is False
    assert verified["first_broken"]["sequence"] == 3


# -- health, auth, envelope, limits --------------------------------------------------------------------------


def test_health_and_ready_need_no_key() -> None:
    fake = FakePlatform()
    with httpx.Client(transport=fake.transport) as raw:
        assert raw.get("http://anything.example/api/v1/health").json()["status"] == "ok"
        assert raw.get("https://other-host:8443/api/v1/ready").json()["status"] == "ready"
        error_of(raw.post(f"{DEFAULT_ENDPOINT}{PROPOSE}", json=body()), 401, "missing_api_key")


def test_api_key_and_scopes_are_enforced_when_configured() -> None:
    fake = FakePlatform(api_key="aegis_sk_right", scopes=["governance:propose"], key_name="bot")
    with fake.http_client() as http:
        assert http.post(PROPOSE, json=body()).status_code == 200
        details = error_of(http.get("/api/v1/audit/verify"), 403, "missing_scope")
        assert details["required_scope"] == "audit:read"
    with fake.http_client(headers={"Authorization": "Bearer aegis_sk_wrong"}) as wrong:
        response = wrong.post(PROPOSE, json=body())
        error_of(response, 401, "invalid_api_key")
        assert response.headers["www-authenticate"] == "Bearer"


def test_request_id_is_echoed_or_generated(http: httpx.Client) -> None:
    assert http.get("/api/v1/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = http.get("/api/v1/nowhere")
    assert generated.headers["x-request-id"].startswith("req_")
    error_of(generated, 404, "not_found")


def test_unknown_routes_and_methods(http: httpx.Client) -> None:
    details = error_of(http.delete(PROPOSE), 405, "method_not_allowed")
    assert details["allowed"] == ["POST"]
    error_of(http.get("/api/v2/governance/propose"), 404, "not_found")


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        (b'{"actor": 1, "actor": 2}', {"content-type": "application/json"}, 400, "duplicate_keys"),
        (b'{"a": NaN}', {"content-type": "application/json"}, 400, "invalid_json"),
        (b"actor=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        (b"[" * 40 + b"]" * 40, {"content-type": "application/json"}, 422, "too_deep"),
        (b" " * (1024 * 1024 + 1), {"content-type": "application/json"}, 413, "body_too_large"),
        (b'{"actor": {"id": ""}, "action": {}}', {"content-type": "application/json"}, 422, "invalid_request"),
    ],
)
def test_body_errors_use_the_envelope(
    http: httpx.Client, fake: FakePlatform, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    error_of(http.post(PROPOSE, content=content, headers=headers), status, code)
    assert fake.proposals == []


def test_validation_errors_never_echo_input(http: httpx.Client) -> None:
    response = http.post(PROPOSE, json={**body(), "actor": {"id": "agent", "type": "robot-secret"}})
    details = error_of(response, 422, "invalid_request")
    assert details["errors"][0]["loc"] == ["body", "actor", "type"]
    assert "robot-secret" not in response.text


def test_parameters_too_large(http: httpx.Client) -> None:
    error_of(http.post(PROPOSE, json=body(blob="x" * (64 * 1024))), 422, "parameters_too_large")


# -- failure injection ---------------------------------------------------------------------------------------


def test_fail_next_answers_with_the_envelope_then_recovers(http: httpx.Client, fake: FakePlatform) -> None:
    fake.fail_next(503, times=2, retry_after=2)
    first = http.post(PROPOSE, json=body())
    details = error_of(first, 503, "unavailable")
    assert first.headers["retry-after"] == "2" and details["retry_after"] == 2
    error_of(http.post(PROPOSE, json=body()), 503, "unavailable")
    assert http.post(PROPOSE, json=body()).status_code == 200
    assert [r.status_code for r in fake.requests] == [503, 503, 200]
    assert len(fake.proposals) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "rate_limited"),
        (500, "internal_error"),
        (401, "invalid_api_key"),
        (403, "missing_scope"),
        (418, "invalid_request"),
    ],
)
def test_fail_next_codes_follow_the_status(http: httpx.Client, fake: FakePlatform, status: int, code: str) -> None:
    fake.fail_next(status)
    response = http.post(PROPOSE, json=body())
    error_of(response, status, code)
    assert ("retry-after" in response.headers) == (status == 429)


def test_fail_next_with_custom_code_and_path(http: httpx.Client, fake: FakePlatform) -> None:
    fake.fail_next(409, code="confirmation_used", message="scripted conflict", path="*/propose")
    assert http.get("/api/v1/health").status_code == 200
    response = http.post(PROPOSE, json=body())
    error_of(response, 409, "confirmation_used")
    assert response.json()["error"]["message"] == "scripted conflict"
    with pytest.raises(ValueError, match="400-599"):
        fake.fail_next(200)
    with pytest.raises(ValueError, match="at least 1"):
        fake.fail_next(times=0)


def test_connect_errors_and_timeouts(http: httpx.Client, fake: FakePlatform) -> None:
    fake.fail_with_connect_error()
    fake.fail_with_timeout(path="/api/v1/health")
    with pytest.raises(httpx.ConnectError):
        http.post(PROPOSE, json=body())
    with pytest.raises(httpx.ReadTimeout):
        http.get("/api/v1/health")
    assert http.post(PROPOSE, json=body()).status_code == 200
    assert [r.status_code for r in fake.requests] == [None, None, 200]


# -- inspection and assertions -------------------------------------------------------------------------------


def test_requests_are_recorded_without_authorization(http: httpx.Client, fake: FakePlatform) -> None:
    http.post(PROPOSE, json=body(amount=3), params={"trace": "1"}, headers={"X-Custom": "yes"})
    (request,) = fake.requests
    assert (request.method, request.path, request.query) == ("POST", PROPOSE, {"trace": "1"})
    assert request.headers["x-custom"] == "yes"
    assert "authorization" not in request.headers
    assert request.json["action"]["parameters"] == {"amount": 3}
    assert request.status_code == 200


def test_assert_proposed_and_not_proposed(http: httpx.Client, fake: FakePlatform) -> None:
    http.post(PROPOSE, json=body(amount=40, currency="EUR"))
    http.post(PROPOSE, json=body("email.send", to="a@example.test"))
    found = fake.assert_proposed("payments.refund", amount=40)
    assert found.action.parameters["currency"] == "EUR"
    fake.assert_proposed("payments.*")
    fake.assert_not_proposed("payments.refund", amount=41)
    fake.assert_not_proposed("database.*")
    with pytest.raises(AssertionError) as info:
        fake.assert_proposed("payments.refund", amount=500, reason="x")
    message = str(info.value)
    assert "'payments.refund' with amount=500, reason='x'" in message
    assert "amount=40, expected 500; reason missing" in message
    assert "email.send by agent-1" in message
    with pytest.raises(AssertionError, match=r"Expected no proposal of 'email\.send', but 1 were received"):
        fake.assert_not_proposed("email.send")


def test_assert_proposed_on_an_unused_fake_says_so() -> None:
    with pytest.raises(AssertionError, match="received no proposals at all"):
        FakePlatform().assert_proposed("anything")
    with pytest.raises(LookupError, match="no decision"):
        _ = FakePlatform().last_decision


def test_reset_forgets_everything_but_constructor_state(http: httpx.Client) -> None:
    fake = FakePlatform(capabilities=[Capability(name="kept")])
    with fake.http_client() as http:
        fake.script("*", "DENY")
        fake.register_capability("added")
        fake.fail_next(times=5, path="/nowhere")
        fake.advance(100)
        http.post(PROPOSE, json=body())
        fake.reset()
        assert (fake.proposals, fake.decisions, fake.requests, fake.audit_log) == ([], {}, [], [])
        assert list(fake.capabilities) == ["kept"]
        assert abs(fake.now - datetime.now(timezone.utc)) < timedelta(seconds=60)
        assert decision_of(http.post(PROPOSE, json=body())).outcome == "ALLOW"


def test_clock_is_injectable_and_only_moves_forward() -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    fake = FakePlatform(clock=lambda: start)
    fake.advance(timedelta(minutes=5))
    assert fake.now == start + timedelta(minutes=5)
    with pytest.raises(ValueError, match="forward"):
        fake.advance(-1)
    with fake.http_client() as http:
        assert decision_of(http.post(PROPOSE, json=body())).timestamp == "2030-01-01T00:05:00Z"


def test_thread_safety_under_concurrent_proposals(fake: FakePlatform) -> None:
    fake.script_sequence("payments.refund", ["DENY"] * 50)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with fake.http_client() as http:
                for n in range(10):
                    http.post(PROPOSE, json=body(n=n)).raise_for_status()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    outcomes = [d.outcome for d in fake.decisions.values()]
    assert (outcomes.count("DENY"), outcomes.count("ALLOW")) == (50, 30)
    assert _audit.verify(fake._state).valid


# -- async ---------------------------------------------------------------------------------------------------


async def test_async_client_drives_the_same_flows(fake: FakePlatform) -> None:
    fake.script("payments.refund", "ESCALATE")
    async with fake.async_http_client() as http:
        pending = decision_of(await http.post(PROPOSE, json=body(amount=9)))
        approved = decision_of(
            await http.post(f"/api/v1/governance/decisions/{pending.decision_id}/review", json={"approve": True})
        )
        token = approved.confirmation_token
        confirmed = decision_of(await http.post(PROPOSE, json={**body(amount=9), "confirmation_token": token}))
        assert confirmed.parent_decision_id == pending.decision_id
        error_of(
            await http.post(PROPOSE, json={**body(amount=9), "confirmation_token": token}), 409, "confirmation_used"
        )
        fake.fail_with_connect_error()
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/v1/health")
        assert (await http.get("/api/v1/audit/verify")).json()["valid"] is True
    async with httpx.AsyncClient(transport=fake.transport) as raw:
        assert (await raw.get("http://elsewhere/api/v1/health")).status_code == 200
