"""Propose, confirmation and escalation round trips, tokens, idempotency, decisions, executions."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import Clock, ServerFactory, error_of, proposal, propose, until_waiting

from aegis_server.inprocess import InProcessServer


async def trail(client: httpx.AsyncClient, decision_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/audit/log/{decision_id}")
    assert response.status_code == 200
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def rejected(client: httpx.AsyncClient, code: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/audit/log", params={"limit": 200})
    return [r for r in response.json()["items"] if r["payload"].get("code") == code]


# -- outcomes -------------------------------------------------------------------------------------


async def test_allow_carries_constraints_and_an_audit_trail(client: httpx.AsyncClient) -> None:
    response = await propose(client, proposal())
    assert response.status_code == 200
    decision = response.json()
    assert decision["outcome"] == "ALLOW"
    assert decision["decision_id"].startswith("dec_")
    assert decision["constraints"] == {"max_rows": 100}
    assert decision["policy_ids"] == ["baseline/read"]
    assert decision["confirmation_token"] is None
    events = [r["event_type"] for r in await trail(client, decision["decision_id"])]
    assert events == ["proposal", "decision"]


async def test_deny(client: httpx.AsyncClient) -> None:
    decision = (await propose(client, proposal("database.drop", table="users"))).json()
    assert decision["outcome"] == "DENY"
    assert "Dropping is never allowed" in decision["reason"]


async def test_sensitive_parameters_are_hashed_in_the_audit(client: httpx.AsyncClient) -> None:
    body = proposal(query="SELECT 1", password="hunter2-secret")
    decision = (await propose(client, body)).json()
    records = await trail(client, decision["decision_id"])
    stored = records[0]["payload"]["action"]["parameters"]
    assert stored["query"] == "SELECT 1"
    assert stored["password"].startswith("hmac-sha256:")  # keyed with the server secret, not a bare hash
    assert "hunter2-secret" not in str(records)


async def test_unknown_capability_is_404_with_suggestions_and_audited(client: httpx.AsyncClient) -> None:
    response = await propose(client, proposal("database.qery", query="x"))
    assert response.status_code == 404
    error = error_of(response)
    assert (error["type"], error["code"]) == ("governance_error", "unknown_capability")
    assert "database.query" in error["details"]["suggestions"]
    assert "database.query" in error["message"]
    assert len(await rejected(client, "unknown_capability")) == 1


async def test_invalid_parameters_name_the_field_and_are_audited(client: httpx.AsyncClient) -> None:
    response = await propose(client, proposal("payments.transfer", amount="lots"))
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"]) == ("governance_error", "invalid_parameters")
    assert error["details"]["field"] == "amount"
    assert "lots" not in response.text
    assert len(await rejected(client, "invalid_parameters")) == 1


async def test_parameters_too_large(make_server: ServerFactory) -> None:
    async with make_server(max_parameters_bytes=100) as server:
        response = await propose(server.async_http_client(), proposal(query="x" * 200))
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"]) == ("validation_error", "parameters_too_large")
    assert error["details"]["max_bytes"] == 100


# -- confirmation ---------------------------------------------------------------------------------


def _production(actor: str = "agent-1", query: str = "SELECT 1") -> dict[str, Any]:
    return proposal(query=query, database="production", actor=actor)


async def test_confirmation_round_trip(client: httpx.AsyncClient) -> None:
    first = (await propose(client, _production())).json()
    assert first["outcome"] == "REQUIRE_CONFIRMATION"
    token = first["confirmation_token"]
    assert token and first["expires_at"] == "2030-01-01T12:05:00Z"

    confirmed = (await propose(client, {**_production(), "confirmation_token": token})).json()
    assert confirmed["outcome"] == "ALLOW"
    assert confirmed["parent_decision_id"] == first["decision_id"]
    assert first["decision_id"] in confirmed["reason"]
    assert [r["event_type"] for r in await trail(client, first["decision_id"])] == [
        "proposal",
        "decision",
        "confirmation",
    ]


async def test_token_replay_is_409_used_and_audited(client: httpx.AsyncClient) -> None:
    token = (await propose(client, _production())).json()["confirmation_token"]
    assert (await propose(client, {**_production(), "confirmation_token": token})).status_code == 200
    again = await propose(client, {**_production(), "confirmation_token": token})
    assert again.status_code == 409
    assert error_of(again)["code"] == "confirmation_used"
    assert len(await rejected(client, "confirmation_used")) == 1


async def test_token_expiry_is_409_expired_and_audited(client: httpx.AsyncClient, clock: Clock) -> None:
    token = (await propose(client, _production())).json()["confirmation_token"]
    clock.advance(301)
    response = await propose(client, {**_production(), "confirmation_token": token})
    assert response.status_code == 409
    error = error_of(response)
    assert (error["type"], error["code"]) == ("governance_error", "confirmation_expired")
    assert len(await rejected(client, "confirmation_expired")) == 1


@pytest.mark.parametrize(
    ("changed", "mismatched"),
    [
        (_production(actor="agent-2"), ["actor"]),
        (_production(query="SELECT 2"), ["parameters"]),
        ({**_production(), "action": {"capability": "database.drop", "parameters": {}}}, ["capability", "parameters"]),
    ],
    ids=["cross-actor", "other-parameters", "other-capability"],
)
async def test_token_mismatch_is_409_and_audited(
    client: httpx.AsyncClient, changed: dict[str, Any], mismatched: list[str]
) -> None:
    first = (await propose(client, _production())).json()
    response = await propose(client, {**changed, "confirmation_token": first["confirmation_token"]})
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "confirmation_mismatch"
    assert error["details"]["mismatched"] == mismatched
    records = await rejected(client, "confirmation_mismatch")
    assert len(records) == 1
    assert records[0]["decision_id"] == first["decision_id"]
    # The token was not consumed by the failed attempt: the right proposal still goes through.
    ok = await propose(client, {**_production(), "confirmation_token": first["confirmation_token"]})
    assert ok.json()["outcome"] == "ALLOW"


@pytest.mark.parametrize("token", ["garbage", "ct1.dec_nope.99999999999.AAAA", "ct1.dec_x.1.!!"])
async def test_forged_token_is_409_invalid_and_audited(client: httpx.AsyncClient, token: str) -> None:
    response = await propose(client, {**_production(), "confirmation_token": token})
    assert response.status_code == 409
    assert error_of(response)["code"] == "confirmation_invalid"
    assert len(await rejected(client, "confirmation_invalid")) == 1


async def test_token_signed_with_another_secret_is_invalid(make_server: ServerFactory, tmp_path: Any) -> None:
    async with make_server(db_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}", secret="another-secret-16b+") as s:
        token = (await propose(s.async_http_client(), _production())).json()["confirmation_token"]
    async with make_server() as server:
        client = server.async_http_client()
        first = (await propose(client, _production())).json()
        decision_id = first["decision_id"]
        forged = ".".join(["ct1", decision_id, *token.split(".")[2:]])
        response = await propose(client, {**_production(), "confirmation_token": forged})
    assert response.status_code == 409
    assert error_of(response)["code"] == "confirmation_invalid"


# -- escalation -----------------------------------------------------------------------------------


def _transfer(amount: float = 5000) -> dict[str, Any]:
    return proposal("payments.transfer", amount=amount)


async def test_escalation_approved_then_confirmed(server: InProcessServer, client: httpx.AsyncClient) -> None:
    pending = (await propose(client, _transfer())).json()
    assert pending["outcome"] == "ESCALATE"
    assert pending["review"]["status"] == "pending"
    assert pending["confirmation_token"] is None
    assert pending["expires_at"].startswith("2030-01-01T12:10:00")  # the rule's 600 s

    reviewer_key = await server.acreate_key("alice", ["governance:review"])
    reviewer = server.async_http_client(reviewer_key)
    review = await reviewer.post(
        f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": True, "note": "ok"}
    )
    assert review.status_code == 200
    approved = review.json()
    assert approved["review"]["status"] == "approved"
    assert approved["review"]["reviewer"] == "alice"
    assert approved["review"]["note"] == "ok"
    token = approved["confirmation_token"]
    assert token

    allowed = (await propose(client, {**_transfer(), "confirmation_token": token})).json()
    assert allowed["outcome"] == "ALLOW"
    assert allowed["parent_decision_id"] == pending["decision_id"]
    assert "alice" in allowed["reason"]
    events = [r["event_type"] for r in await trail(client, pending["decision_id"])]
    assert events == ["proposal", "decision", "review", "confirmation"]

    again = await reviewer.post(
        f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": False}
    )
    assert again.status_code == 409
    assert error_of(again)["code"] == "not_pending"


async def test_escalation_denied_gives_no_token(server: InProcessServer, client: httpx.AsyncClient) -> None:
    pending = (await propose(client, _transfer())).json()
    reviewer = server.async_http_client(await server.acreate_key("bob", ["governance:review"]))
    review = await reviewer.post(
        f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": False, "note": "no"}
    )
    denied = review.json()
    assert denied["review"]["status"] == "denied"
    assert denied["review"]["reviewer"] == "bob"
    assert denied["confirmation_token"] is None


async def test_escalation_expires_lazily_on_read(client: httpx.AsyncClient, clock: Clock) -> None:
    pending = (await propose(client, _transfer())).json()
    clock.advance(601)
    got = (await client.get(f"/api/v1/governance/decisions/{pending['decision_id']}")).json()
    assert got["review"]["status"] == "expired"
    assert got["confirmation_token"] is None
    events = [r["event_type"] for r in await trail(client, pending["decision_id"])]
    assert events[-1] == "review_expired"
    late = await client.post(f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": True})
    assert late.status_code == 409
    assert error_of(late)["details"]["status"] == "expired"


async def test_background_expiry_wakes_a_long_poll(server: InProcessServer, clock: Clock) -> None:
    client = server.async_http_client()
    pending = (await propose(client, _transfer())).json()
    waiter = asyncio.create_task(
        client.get(f"/api/v1/governance/decisions/{pending['decision_id']}", params={"wait": 30})
    )
    await until_waiting(server)
    clock.advance(601)
    assert await server.service.expire_due() == [pending["decision_id"]]
    got = (await waiter).json()
    assert got["review"]["status"] == "expired"


async def test_long_poll_returns_when_the_review_lands(server: InProcessServer) -> None:
    client = server.async_http_client()
    pending = (await propose(client, _transfer())).json()
    url = f"/api/v1/governance/decisions/{pending['decision_id']}"
    waiter = asyncio.create_task(client.get(url, params={"wait": 30}))
    await until_waiting(server)
    reviewer = server.async_http_client(await server.acreate_key("reviewer", ["governance:review"]))
    await reviewer.post(f"{url}/review", json={"approve": True})
    got = (await waiter).json()
    assert got["review"]["status"] == "approved"
    assert got["confirmation_token"]


async def test_long_poll_sees_a_review_made_by_another_replica(make_server: ServerFactory) -> None:
    async with make_server(long_poll_recheck_seconds=0.01) as first, make_server() as second:
        pending = (await propose(first.async_http_client(), _transfer())).json()
        url = f"/api/v1/governance/decisions/{pending['decision_id']}"
        waiter = asyncio.create_task(first.async_http_client().get(url, params={"wait": 30}))
        await until_waiting(first)
        # A reviewer of their own (the two servers' admin keys share a name, so they count as one person).
        other = second.async_http_client(await second.acreate_key("rita", ["governance:review"], None))
        assert (await other.post(f"{url}/review", json={"approve": False})).status_code == 200
        got = (await waiter).json()
    assert got["review"]["status"] == "denied"


async def test_wait_on_a_settled_decision_returns_at_once(client: httpx.AsyncClient) -> None:
    decision = (await propose(client, proposal())).json()
    got = await client.get(f"/api/v1/governance/decisions/{decision['decision_id']}", params={"wait": 60})
    assert got.json() == decision


async def test_review_of_a_non_escalation_is_409(client: httpx.AsyncClient) -> None:
    decision = (await propose(client, proposal())).json()
    response = await client.post(
        f"/api/v1/governance/decisions/{decision['decision_id']}/review", json={"approve": True}
    )
    assert response.status_code == 409
    assert error_of(response)["details"]["status"] == "not_escalated"


# -- idempotency ----------------------------------------------------------------------------------


async def test_same_idempotency_key_returns_the_stored_decision_once(client: httpx.AsyncClient) -> None:
    first = await propose(client, proposal(), **{"Idempotency-Key": "k-1"})
    second = await propose(client, proposal(), **{"Idempotency-Key": "k-1"})
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    log = (await client.get("/api/v1/audit/log", params={"event_type": "decision"})).json()["items"]
    assert [r["decision_id"] for r in log] == [first.json()["decision_id"]]


async def test_same_idempotency_key_with_another_body_is_409(client: httpx.AsyncClient) -> None:
    await propose(client, proposal(), **{"Idempotency-Key": "k-1"})
    response = await propose(client, proposal(query="SELECT 2"), **{"Idempotency-Key": "k-1"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_conflict"


async def test_idempotency_keys_are_per_api_key(server: InProcessServer, client: httpx.AsyncClient) -> None:
    other = server.async_http_client(await server.acreate_key("other", ["governance:propose"]))
    first = (await propose(client, proposal(), **{"Idempotency-Key": "k-1"})).json()
    second = (await propose(other, proposal(), **{"Idempotency-Key": "k-1"})).json()
    assert first["decision_id"] != second["decision_id"]


async def test_concurrent_retries_record_one_decision(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(propose(client, proposal(), **{"Idempotency-Key": "race"}) for _ in range(5)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["decision_id"] for r in responses}) == 1
    log = (await client.get("/api/v1/audit/log", params={"event_type": "decision"})).json()["items"]
    assert len(log) == 1


# -- decisions and executions ---------------------------------------------------------------------


async def test_get_unknown_decision_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/governance/decisions/dec_missing")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found"


async def test_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    ids = [(await propose(client, proposal(actor=f"agent-{i % 2}"))).json()["decision_id"] for i in range(5)]
    await propose(client, proposal("database.drop"))
    page = (await client.get("/api/v1/governance/decisions", params={"actor_id": "agent-0", "limit": 2})).json()
    assert [d["decision_id"] for d in page["items"]] == [ids[4], ids[2]]
    rest = await client.get(
        "/api/v1/governance/decisions", params={"actor_id": "agent-0", "limit": 2, "cursor": page["next_cursor"]}
    )
    assert [d["decision_id"] for d in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None
    denied = (await client.get("/api/v1/governance/decisions", params={"outcome": "DENY"})).json()["items"]
    assert [d["outcome"] for d in denied] == ["DENY"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"outcome": "MAYBE"}, {"cursor": "bogus"}])
async def test_list_rejects_bad_parameters(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get("/api/v1/governance/decisions", params=params)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


async def test_execution_report_once_and_only_after_allow(client: httpx.AsyncClient) -> None:
    allowed = (await propose(client, proposal())).json()
    url = f"/api/v1/governance/decisions/{allowed['decision_id']}/execution"
    first = await client.post(url, json={"status": "SUCCESS", "result": {"rows": 1}, "duration_ms": 12.5})
    assert first.status_code == 201
    assert first.json()["status"] == "SUCCESS"
    again = await client.post(url, json={"status": "SUCCESS"})
    assert (again.status_code, error_of(again)["code"]) == (409, "already_reported")

    denied = (await propose(client, proposal("database.drop"))).json()
    response = await client.post(
        f"/api/v1/governance/decisions/{denied['decision_id']}/execution", json={"status": "FAILED"}
    )
    assert (response.status_code, error_of(response)["code"]) == (409, "not_allowed")
    missing = await client.post("/api/v1/governance/decisions/dec_missing/execution", json={"status": "SUCCESS"})
    assert missing.status_code == 404


async def test_decisions_survive_a_restart(make_server: ServerFactory) -> None:
    async with make_server() as server:
        agent_key = await server.acreate_key("agent", ["admin"])
        decision = (await propose(server.async_http_client(agent_key), _production())).json()
    async with make_server() as server:
        client = server.async_http_client(agent_key)
        assert (await client.get(f"/api/v1/governance/decisions/{decision['decision_id']}")).json() == decision
        confirmed = await propose(client, {**_production(), "confirmation_token": decision["confirmation_token"]})
        assert confirmed.json()["outcome"] == "ALLOW"
