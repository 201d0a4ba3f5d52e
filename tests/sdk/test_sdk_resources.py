"""Every endpoint of the contract has a method: decisions, capabilities, policies, audit, health, ready.
Listings page on their own (sync iterators for AegisClient, async iterators for AsyncAegisClient)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sdk_support import ENDPOINT, FakePlatform, collect, decision_body, error_body, reply, resolve

from aegis_sdk import (
    AsyncPageIterator,
    AuditRecord,
    AuditTrail,
    AuditVerification,
    Capability,
    ExecutionRecord,
    Health,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    Policy,
    PolicyError,
    PolicyValidation,
    ServerError,
    SyncPageIterator,
)

BASE = f"{ENDPOINT}/api/v1"


def audit_record(n: int) -> dict[str, Any]:
    return {
        "audit_ref": f"aud_{n}",
        "sequence": n,
        "event_type": "decision",
        "decision_id": "dec_1",
        "timestamp": "2026-01-01T00:00:00Z",
        "payload": {},
        "previous_hash": "0" * 64,
        "hash": f"{n:064x}",
    }


CAPABILITY = {
    "name": "payments.refund",
    "description": "Refund an order",
    "risk_level": "high",
    "parameter_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
}
POLICY = {
    "name": "refunds",
    "description": "",
    "enabled": True,
    "rules": [{"id": "big", "capability": "payments.refund", "condition": "amount > 500", "outcome": "ESCALATE"}],
}


async def test_decisions_get(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body(decision_id="dec/odd id")))
    client = make_client(platform)
    decision = await resolve(client.decisions.get("dec/odd id"))
    assert decision.decision_id == "dec/odd id"
    assert platform.last.method == "GET"
    assert platform.last.url.raw_path == b"/api/v1/governance/decisions/dec%2Fodd%20id"


async def test_decisions_list_pages_on_its_own(make_client: Any) -> None:
    pages = {
        None: {"items": [decision_body(decision_id="dec_1"), decision_body(decision_id="dec_2")], "next_cursor": "c2"},
        "c2": {"items": [decision_body(decision_id="dec_3")], "next_cursor": "c3"},
        "c3": {"items": [], "next_cursor": None},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return reply(200, pages[request.url.params.get("cursor")])

    platform = FakePlatform(answer)
    client = make_client(platform)
    since = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    iterator = client.decisions.list(actor_id="agent-001", outcome="DENY", since=since, until="2026-02-01T00:00:00Z")
    assert platform.requests == []  # lazy: nothing is fetched before iterating
    assert isinstance(iterator, (SyncPageIterator, AsyncPageIterator))
    ids = [d.decision_id for d in await collect(iterator)]
    assert ids == ["dec_1", "dec_2", "dec_3"]
    assert len(platform.requests) == 3
    first = dict(platform.requests[0].url.params)
    assert first == {
        "actor_id": "agent-001",
        "outcome": "DENY",
        "since": "2025-12-31T22:00:00Z",
        "until": "2026-02-01T00:00:00Z",
    }
    assert platform.requests[1].url.params["cursor"] == "c2"
    assert platform.requests[1].url.params["actor_id"] == "agent-001"


async def test_decisions_list_page_size(make_client: Any) -> None:
    platform = FakePlatform(reply(200, {"items": [], "next_cursor": None}))
    client = make_client(platform)
    assert await collect(client.decisions.list(limit=200, review_status="pending")) == []
    assert dict(platform.last.url.params) == {"limit": "200", "review_status": "pending"}


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0},
        {"limit": 201},
        {"outcome": "MAYBE"},
        {"review_status": "later"},
        {"since": datetime(2026, 1, 1)},
        {"actor_id": ""},
    ],
)
async def test_decisions_list_rejects_bad_filters_at_once(make_client: Any, filters: dict[str, Any]) -> None:
    platform = FakePlatform(reply(200, {"items": []}))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError):
        client.decisions.list(**filters)
    assert platform.requests == []


async def test_a_cursor_loop_is_stopped(make_client: Any) -> None:
    platform = FakePlatform(reply(200, {"items": [decision_body()], "next_cursor": "same"}))
    client = make_client(platform)
    with pytest.raises(MalformedResponseError, match="cursor"):
        await collect(client.decisions.list())
    assert len(platform.requests) == 2


async def test_decisions_review(make_client: Any) -> None:
    reviewed = decision_body("ESCALATE", review={"status": "approved", "reviewer": "ops", "note": "fine"})
    platform = FakePlatform(reply(200, reviewed))
    client = make_client(platform)
    decision = await resolve(client.decisions.review("dec_1", approve=True, note="fine"))
    assert decision.review is not None and decision.review.status == "approved"
    assert (platform.last.method, platform.last.url) == ("POST", f"{BASE}/governance/decisions/dec_1/review")
    assert json.loads(platform.last.content) == {"approve": True, "note": "fine"}
    await resolve(client.decisions.review("dec_1", approve=False))
    assert json.loads(platform.last.content) == {"approve": False}


async def test_decisions_review_needs_a_bool(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="approve"):
        await resolve(client.decisions.review("dec_1", approve="yes"))
    assert platform.requests == []


async def test_decisions_report_execution(make_client: Any) -> None:
    record = {"decision_id": "dec_1", "status": "FAILED", "recorded_at": "2026-01-01T00:00:01Z", "audit_ref": "aud_9"}
    platform = FakePlatform(reply(200, record))
    client = make_client(platform)
    result = await resolve(
        client.decisions.report_execution(
            "dec_1", status="FAILED", error={"code": "timeout", "message": "db slow"}, duration_ms=12.5
        )
    )
    assert isinstance(result, ExecutionRecord)
    assert result.audit_ref == "aud_9"
    assert platform.last.url == f"{BASE}/governance/decisions/dec_1/execution"
    assert json.loads(platform.last.content) == {
        "status": "FAILED",
        "error": {"code": "timeout", "message": "db slow"},
        "duration_ms": 12.5,
    }


async def test_decisions_report_execution_validates_first(make_client: Any) -> None:
    platform = FakePlatform(reply(200, {}))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match=r"execution report\.status"):
        await resolve(client.decisions.report_execution("dec_1", status="DONE"))
    with pytest.raises(InvalidRequestError, match="decision_id"):
        await resolve(client.decisions.report_execution("", status="SUCCESS"))
    assert platform.requests == []


@pytest.mark.parametrize("shape", ["list", "items"])
async def test_capabilities(make_client: Any, shape: str) -> None:
    listing: Any = [CAPABILITY] if shape == "list" else {"items": [CAPABILITY]}
    platform = FakePlatform()
    platform.route("GET", "/api/v1/capabilities", reply(200, listing))
    platform.route("GET", "/api/v1/capabilities/payments.refund", reply(200, {**CAPABILITY, "created_at": "x"}))
    platform.route("POST", "/api/v1/capabilities", reply(201, CAPABILITY))
    client = make_client(platform)
    assert [c.name for c in await resolve(client.capabilities.list())] == ["payments.refund"]
    capability = await resolve(client.capabilities.get("payments.refund"))
    assert isinstance(capability, Capability)
    assert capability.risk_level == "high"
    created = await resolve(client.capabilities.create(Capability(**CAPABILITY)))
    assert created == Capability(**CAPABILITY)
    assert json.loads(platform.last.content) == CAPABILITY
    await resolve(client.capabilities.create(CAPABILITY))
    with pytest.raises(InvalidRequestError, match=r"capability\.risk_level"):
        await resolve(client.capabilities.create({**CAPABILITY, "risk_level": "extreme"}))


async def test_policies(make_client: Any) -> None:
    platform = FakePlatform()
    platform.route("GET", "/api/v1/policies", reply(200, [POLICY]))
    platform.route("GET", "/api/v1/policies/refunds", reply(200, POLICY))
    platform.route("POST", "/api/v1/policies", reply(201, POLICY))
    platform.route("PUT", "/api/v1/policies/refunds", reply(200, POLICY))
    platform.route("DELETE", "/api/v1/policies/refunds", reply(204))
    platform.route("POST", "/api/v1/policies/validate", reply(200, {"valid": True, "errors": []}))
    client = make_client(platform)
    assert [p.name for p in await resolve(client.policies.list())] == ["refunds"]
    assert isinstance(await resolve(client.policies.get("refunds")), Policy)
    assert (await resolve(client.policies.create(POLICY))).rules[0].outcome == "ESCALATE"
    assert (await resolve(client.policies.update("refunds", Policy(**POLICY)))).name == "refunds"
    assert platform.last.method == "PUT"
    assert await resolve(client.policies.delete("refunds")) is None
    assert platform.last.method == "DELETE"
    validation = await resolve(client.policies.validate(POLICY))
    assert isinstance(validation, PolicyValidation) and validation.valid
    assert json.loads(platform.last.content)["name"] == "refunds"


async def test_policy_update_name_must_match(make_client: Any) -> None:
    platform = FakePlatform(reply(200, POLICY))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="differs"):
        await resolve(client.policies.update("other", POLICY))
    assert platform.requests == []


async def test_invalid_policy_is_a_policy_error(make_client: Any) -> None:
    problems = [{"message": "undeclared reference to 'amout'", "policy": "refunds", "rule": "big"}]
    body = error_body("governance_error", "invalid_policy", "The policy does not compile", errors=problems)
    client = make_client(FakePlatform(reply(422, body)))
    with pytest.raises(PolicyError) as caught:
        await resolve(client.policies.create(POLICY))
    assert caught.value.details["errors"] == problems


async def test_audit_log_trail_verify(make_client: Any) -> None:
    platform = FakePlatform()
    platform.route(
        "GET",
        "/api/v1/audit/log",
        lambda request: reply(
            200,
            {"items": [audit_record(1), audit_record(2)], "next_cursor": "n"}
            if "cursor" not in request.url.params
            else {"items": [audit_record(3)], "next_cursor": None},
        ),
    )
    platform.route("GET", "/api/v1/audit/log/dec_1", reply(200, {"decision_id": "dec_1", "records": [audit_record(1)]}))
    platform.route(
        "GET", "/api/v1/audit/verify", reply(200, {"valid": True, "records_checked": 3, "head_hash": "f" * 64})
    )
    client = make_client(platform)
    records = await collect(client.audit.log(capability="payments.refund", event_type="decision", limit=2))
    assert [r.sequence for r in records] == [1, 2, 3]
    assert all(isinstance(r, AuditRecord) for r in records)
    assert platform.requests[0].url.params["capability"] == "payments.refund"
    trail = await resolve(client.audit.trail("dec_1"))
    assert isinstance(trail, AuditTrail) and trail.records[0].audit_ref == "aud_1"
    verification = await resolve(client.audit.verify())
    assert isinstance(verification, AuditVerification)
    assert (verification.valid, verification.records_checked) == (True, 3)


async def test_health_and_ready(make_client: Any) -> None:
    platform = FakePlatform()
    platform.route("GET", "/api/v1/health", reply(200, {"status": "ok", "version": "0.1.0"}))
    platform.route("GET", "/api/v1/ready", reply(200, {"status": "ready", "checks": {"store": {"ok": True}}}))
    client = make_client(platform)
    health = await resolve(client.health())
    assert isinstance(health, Health) and health.status == "ok"
    assert (await resolve(client.ready())).checks == {"store": {"ok": True}}


async def test_not_ready_is_a_server_error_without_retries(make_client: Any, sleeps: list[float]) -> None:
    body = error_body("server_error", "unavailable", "Not ready: store.", checks={"store": {"ok": False}})
    platform = FakePlatform(reply(503, body, {"Retry-After": "1"}))
    client = make_client(platform)
    with pytest.raises(ServerError) as caught:
        await resolve(client.ready())
    assert caught.value.details["checks"] == {"store": {"ok": False}}
    assert len(platform.requests) == 1
    assert sleeps == []


async def test_not_ready_with_a_health_body(make_client: Any) -> None:
    platform = FakePlatform(reply(503, {"status": "starting", "checks": {"policies": "loading"}}))
    client = make_client(platform)
    health = await resolve(client.ready())
    assert health.status == "starting"


async def test_not_found(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(404, error_body("not_found", "not_found", "No policy 'x'."))))
    with pytest.raises(NotFoundError, match="No policy 'x'"):
        await resolve(client.policies.get("x"))


@pytest.mark.parametrize("bad", ["", None])
async def test_ids_and_names_are_checked(make_client: Any, bad: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError):
        await resolve(client.decisions.get(bad))
    with pytest.raises(InvalidRequestError):
        await resolve(client.policies.delete(bad))
    with pytest.raises(InvalidRequestError):
        await resolve(client.audit.trail(bad))
    assert platform.requests == []


async def test_malformed_listing(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, {"capabilities": []})))
    with pytest.raises(MalformedResponseError, match="items"):
        await resolve(client.capabilities.list())
