"""Every outcome of a governed route against the real aegis-server (in-process, example policies)."""

from __future__ import annotations

from typing import Any

from fastapi_support import ALICE, BOT, asgi_client, build_app, load_example

from aegis_fastapi import DECISION_HEADER, Aegis
from aegis_sdk import AsyncAegisClient
from aegis_server.inprocess import InProcessServer


def refund(amount: float, **extra: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", **extra}


async def governed(server: InProcessServer) -> tuple[Aegis, AsyncAegisClient]:
    client = server.async_client()
    return Aegis(actor=load_example().current_actor, client=client), client


async def test_allow_runs_the_endpoint_with_path_and_validated_body_as_parameters(server: InProcessServer) -> None:
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-17/refunds", json={"amount": 40, "currency": "EUR"}, headers=BOT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refunded"] == 40 and body["limit"] == 100
    assert response.headers[DECISION_HEADER] == body["decision_id"]
    trail = await client.audit.trail(body["decision_id"])
    proposal = next(r for r in trail.records if r.event_type == "proposal")
    assert proposal.actor_id == "support-bot"
    assert proposal.payload["action"]["parameters"] == {"order_id": "A-17", "amount": 40, "currency": "EUR"}
    metadata = proposal.payload["context"]["metadata"]
    assert metadata["route"] == "/orders/{order_id}/refunds" and metadata["method"] == "POST"
    assert metadata["request_id"].startswith("req_")


async def test_deny_is_403_with_reason_and_decision_id(server: InProcessServer) -> None:
    app = load_example().create_app(client=server.async_client())
    async with asgi_client(app) as http:
        response = await http.post("/queries", json={"query": "DROP TABLE users", "database": "staging"}, headers=BOT)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail["code"] == "governance_denied" and detail["outcome"] == "DENY"
    assert "Destructive SQL" in detail["reason"]
    assert detail["decision_id"].startswith("dec_") and response.headers[DECISION_HEADER] == detail["decision_id"]


async def test_sync_endpoint_is_governed_and_sees_constraints(server: InProcessServer) -> None:
    app = load_example().create_app(client=server.async_client())
    async with asgi_client(app) as http:
        response = await http.post("/queries", json={"query": "SELECT 1", "database": "staging"}, headers=BOT)
    assert response.status_code == 200, response.text
    assert response.json()["max_rows"] == 1000


async def test_confirmation_round_trip_then_the_token_is_spent(server: InProcessServer) -> None:
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-18/refunds", json=refund(250), headers=BOT)
        assert first.status_code == 428
        detail = first.json()["detail"]
        assert detail["code"] == "confirmation_required" and detail["outcome"] == "REQUIRE_CONFIRMATION"
        assert detail["confirmation_header"] == "AEGIS-Confirmation" and detail["expires_at"]
        assert detail["decision_id"] in detail["message"]

        confirm = {**BOT, "AEGIS-Confirmation": detail["decision_id"]}
        second = await http.post("/orders/A-18/refunds", json=refund(250), headers=confirm)
        assert second.status_code == 200, second.text
        assert second.json()["confirmed_from"] == detail["decision_id"]
        allowed = await client.decisions.get(second.json()["decision_id"])
        assert allowed.outcome == "ALLOW" and allowed.parent_decision_id == detail["decision_id"]

        again = await http.post("/orders/A-18/refunds", json=refund(250), headers=confirm)
    assert again.status_code == 409
    assert again.json()["detail"]["code"] == "confirmation_used"


async def test_tampered_body_or_other_actor_cannot_use_a_confirmation(server: InProcessServer) -> None:
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-19/refunds", json=refund(250), headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]

        tampered = await http.post(
            "/orders/A-19/refunds", json=refund(900), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
        assert tampered.status_code == 409
        assert tampered.json()["detail"]["code"] == "confirmation_mismatch"
        assert "parameters" in tampered.json()["detail"]["message"]

        other_path = await http.post(
            "/orders/B-1/refunds", json=refund(250), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
        assert other_path.json()["detail"]["code"] == "confirmation_mismatch"

        other_actor = await http.post(
            "/orders/A-19/refunds", json=refund(250), headers={**ALICE, "AEGIS-Confirmation": decision_id}
        )
        assert other_actor.status_code == 409
        assert "actor" in other_actor.json()["detail"]["message"]

        # The rejected attempts did not spend the token: the genuine repeat still goes through.
        genuine = await http.post(
            "/orders/A-19/refunds", json=refund(250), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
    assert genuine.status_code == 200
    log = [r async for r in client.audit.log(event_type="confirmation_rejected")]
    assert {r.payload["code"] for r in log} == {"confirmation_mismatch"} and len(log) == 3


async def test_escalation_pending_then_approved_lets_the_same_request_through(server: InProcessServer) -> None:
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-20/refunds", json=refund(5000), headers=BOT)
        assert first.status_code == 403
        detail = first.json()["detail"]
        assert detail["code"] == "review_pending" and detail["review_status"] == "pending"
        assert detail["outcome"] == "ESCALATE" and detail["confirmation_header"] == "AEGIS-Confirmation"
        repeat = {**BOT, "AEGIS-Confirmation": detail["decision_id"]}

        waiting = await http.post("/orders/A-20/refunds", json=refund(5000), headers=repeat)
        assert waiting.status_code == 403 and waiting.json()["detail"]["code"] == "review_pending"

        reviewer = server.async_client(await server.acreate_key("operator", ["governance:review"]))
        await reviewer.decisions.review(detail["decision_id"], approve=True, note="verified")
        approved = await http.post("/orders/A-20/refunds", json=refund(5000), headers=repeat)
    assert approved.status_code == 200, approved.text
    assert approved.json()["confirmed_from"] == detail["decision_id"]


async def test_escalation_denied_by_the_reviewer_is_final(server: InProcessServer) -> None:
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-21/refunds", json=refund(5000), headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]
        reviewer = server.async_client(await server.acreate_key("operator", ["governance:review"]))
        await reviewer.decisions.review(decision_id, approve=False, note="no")
        response = await http.post(
            "/orders/A-21/refunds", json=refund(5000), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "review_denied"
    assert response.json()["detail"]["review_status"] == "denied"


async def test_execution_results_are_recorded_in_the_audit_trail(server: InProcessServer) -> None:
    aegis, client = await governed(server)
    app = build_app(aegis)
    async with asgi_client(app) as http:
        ok = await http.post("/orders/A-22/refunds", json=refund(10), headers=BOT)
        failing = await http.post("/failing/orders/A-23/refunds", json=refund(10), headers=BOT)
    assert ok.status_code == 200 and failing.status_code == 500
    await aegis.drain()
    ok_trail = await client.audit.trail(ok.json()["decision_id"])
    execution = next(r for r in ok_trail.records if r.event_type == "execution")
    assert execution.payload["status"] == "SUCCESS" and execution.payload["duration_ms"] >= 0
    (failed_id,) = [d.decision_id async for d in client.decisions.list() if d.decision_id != ok.json()["decision_id"]]
    failed_trail = await client.audit.trail(failed_id)
    failed = next(r for r in failed_trail.records if r.event_type == "execution")
    assert failed.payload["status"] == "FAILED"
    assert failed.payload["error"]["code"] == "RefundFailed"


async def test_invalid_input_is_fastapis_422_and_nothing_is_proposed(server: InProcessServer) -> None:
    aegis, client = await governed(server)
    app = build_app(aegis)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-24/refunds", json={"amount": "lots"}, headers=BOT)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert ("body", "amount") in locs and ("body", "currency") in locs
    assert [d async for d in client.decisions.list()] == []


async def test_parameters_the_capability_rejects_are_422(server: InProcessServer) -> None:
    aegis, _ = await governed(server)
    app = build_app(aegis)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-25/refunds", json=refund(10, currency="JPY"), headers=BOT)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "invalid_parameters" and "currency" in detail["message"]


async def test_unknown_capability_is_a_misconfiguration_503(server: InProcessServer) -> None:
    aegis, _ = await governed(server)
    app = build_app(aegis)
    async with asgi_client(app) as http:
        response = await http.post("/jobs/compact", json={"name": "nightly"}, headers=BOT)
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "governance_misconfigured"
    assert "Retry-After" in response.headers


async def test_a_key_without_read_scope_cannot_confirm_and_says_so(server: InProcessServer) -> None:
    key = await server.acreate_key("propose-only", ["governance:propose"])
    app = load_example().create_app(client=server.async_client(key))
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-26/refunds", json=refund(250), headers=BOT)
        repeat = {**BOT, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
        second = await http.post("/orders/A-26/refunds", json=refund(250), headers=repeat)
    assert second.status_code == 503
    assert second.json()["detail"]["code"] == "governance_misconfigured"
