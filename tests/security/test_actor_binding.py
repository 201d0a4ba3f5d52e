"""Issue 13, findings 1-3, against the real app (InProcessServer: the ASGI app through httpx, the real store)
on SQLite and PostgreSQL:

1. a `governance:propose` key could claim any actor, and the audit did not say which key proposed;
2. a key with propose + review approved its own ESCALATE and spent the token;
3. any propose key could report the execution of another key's decision (and the real report got 409).

Each test below fails on 3ddec14 and passes now. Plus: migrated (0.1) keys bound to no actor, the audit
naming the key on every record, and the self-review setting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aegis_server.inprocess import InProcessServer
from aegis_server.store import AuditFilters
from aegis_server.store.schema import api_keys, decisions
from reliability._support import postgres_database

POLICIES = Path(__file__).resolve().parents[1] / "server" / "api" / "policies.yaml"
PROPOSE = "/api/v1/governance/propose"
SECRET = "test-secret-of-at-least-16-bytes"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["hot", "routed"])
def path(request: pytest.FixtureRequest) -> str:
    """The proposal endpoint served by the hot path, or (hot routes removed) by FastAPI's router."""
    return str(request.param)


@pytest.fixture
async def server(db_url: str, path: str) -> AsyncIterator[InProcessServer]:
    async with InProcessServer(policy_paths=[POLICIES], db_url=db_url, secret=SECRET) as running:
        if path == "routed":
            running.app.hot_routes.clear()
        yield running


def body(
    actor: str = "support-bot-1", kind: str = "ai-agent", capability: str = "database.query", **params: Any
) -> Any:
    if not params and capability == "database.query":
        params = {"query": "SELECT 1"}
    return {"actor": {"id": actor, "type": kind}, "action": {"capability": capability, "parameters": params}}


async def client_for(
    server: InProcessServer, name: str, scopes: list[str], actors: list[str] | None
) -> httpx.AsyncClient:
    return server.async_http_client(await server.acreate_key(name, scopes, actors))


async def records(server: InProcessServer, event_type: str) -> list[Any]:
    items, _ = await server.store.audit_log(AuditFilters(event_type=event_type), 200, None)
    return list(items)


async def key_id_of(server: InProcessServer, name: str) -> str:
    return next(k.key_id for k in await server.store.list_api_keys() if k.name == name)


# -- finding 1: keys bound to actors -------------------------------------------------------------


async def test_finding1_a_key_proposes_only_for_its_actors(server: InProcessServer) -> None:
    bot = await client_for(server, "support", ["governance:propose"], ["ai-agent:support-bot-*"])
    allowed = await bot.post(PROPOSE, json=body("support-bot-1"))
    assert allowed.status_code == 200 and allowed.json()["outcome"] == "ALLOW"

    for actor, kind in (("finance-admin-agent", "human"), ("support-bot-1", "human"), ("Support-Bot-1", "ai-agent")):
        refused = await bot.post(PROPOSE, json=body(actor, kind))
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("governance_error", "actor_not_allowed")
        assert "support" in error["message"] and "keys update" in error["message"]
        assert "aegis_sk_" not in refused.text

    key_id = await key_id_of(server, "support")
    rejected = await records(server, "proposal_rejected")
    assert [r.payload["code"] for r in rejected] == ["actor_not_allowed"] * 3
    assert {r.payload["api_key_id"] for r in rejected} == {key_id}
    assert rejected[0].actor_id == "finance-admin-agent"
    # the accepted proposal and its decision name the key that proposed it, inside the hashed payload
    assert (await records(server, "proposal"))[0].payload["api_key_id"] == key_id
    assert (await records(server, "decision"))[0].payload["api_key_id"] == key_id
    assert (await server.async_http_client().get("/api/v1/audit/verify")).json()["valid"] is True


async def test_finding1_any_actor_only_when_said_so(server: InProcessServer) -> None:
    anyone = await client_for(server, "anyone", ["governance:propose"], ["*"])
    assert (await anyone.post(PROPOSE, json=body("finance-admin-agent", "human"))).status_code == 200
    by_id = await client_for(server, "by-id", ["governance:propose"], ["finance-*"])  # any type, id glob
    assert (await by_id.post(PROPOSE, json=body("finance-admin-agent", "human"))).status_code == 200
    assert (await by_id.post(PROPOSE, json=body("support-bot-1"))).status_code == 403


async def test_finding1_confirmation_resubmission_and_idempotent_retry_are_checked(server: InProcessServer) -> None:
    bot = await client_for(server, "bot", ["governance:propose"], ["agent-1"])
    key_id = await key_id_of(server, "bot")
    production = body("agent-1", query="SELECT 1", database="production")
    first = (await bot.post(PROPOSE, json=production, headers={"Idempotency-Key": "k1"})).json()
    assert first["outcome"] == "REQUIRE_CONFIRMATION"

    admin = server.async_http_client()
    assert (await admin.patch(f"/api/v1/keys/{key_id}", json={"actors": ["agent-2"]})).status_code == 200
    confirmed = await bot.post(PROPOSE, json={**production, "confirmation_token": first["confirmation_token"]})
    assert confirmed.status_code == 403 and confirmed.json()["error"]["code"] == "actor_not_allowed"
    retried = await bot.post(PROPOSE, json=production, headers={"Idempotency-Key": "k1"})
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "actor_not_allowed"
    assert [r.event_type for r in await records(server, "proposal_rejected")] == ["proposal_rejected"] * 2


async def test_a_migrated_key_is_bound_to_no_actor(
    server: InProcessServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = await client_for(server, "legacy", ["governance:propose", "governance:read"], ["*"])
    key_id = await key_id_of(server, "legacy")
    async with server.store.engine.begin() as conn:  # what migration 0003 leaves for a key made in 0.1
        await conn.execute(sa.update(api_keys).where(api_keys.c.key_id == key_id).values(actors=None))
    server.app.state.authenticator.forget_all()

    refused = await legacy.post(PROPOSE, json=body())
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "actor_not_allowed"
    assert f"aegis-server keys update {key_id} --actors" in error["message"]
    assert (await records(server, "proposal_rejected"))[0].payload["key_bound"] is False
    assert (await legacy.get("/api/v1/governance/decisions")).status_code == 200  # reads still work

    with caplog.at_level(logging.WARNING, logger="aegis_server"):
        async with InProcessServer(policy_paths=[POLICIES], db_url=db_url, secret=SECRET):
            pass
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "bound to no actor" in r.getMessage()
    ]
    assert warnings and warnings[0].startswith("1 API key(s)")


# -- finding 2: separation of duties -------------------------------------------------------------


async def test_finding2_the_proposing_key_cannot_review_its_own_escalation(server: InProcessServer) -> None:
    both = await client_for(server, "both", ["governance:propose", "governance:review", "governance:read"], ["*"])
    key_id = await key_id_of(server, "both")
    pending = (await both.post(PROPOSE, json=body(capability="payments.transfer", amount=5000))).json()
    assert pending["outcome"] == "ESCALATE"
    url = f"/api/v1/governance/decisions/{pending['decision_id']}"

    for approve in (True, False):
        refused = await both.post(f"{url}/review", json={"approve": approve})
        assert refused.status_code == 403
        assert (refused.json()["error"]["type"], refused.json()["error"]["code"]) == ("governance_error", "self_review")
    still = (await both.get(url)).json()
    assert still["review"]["status"] == "pending" and still["confirmation_token"] is None
    rejected = await records(server, "review_rejected")
    assert [(r.payload["code"], r.payload["api_key_id"]) for r in rejected] == [("self_review", key_id)] * 2

    reviewer = await client_for(server, "carol", ["governance:review"], None)
    approved = await reviewer.post(f"{url}/review", json={"approve": True})
    assert approved.status_code == 200 and approved.json()["review"]["reviewer"] == "carol"
    review = (await records(server, "review"))[0]
    assert review.payload["api_key_id"] == await key_id_of(server, "carol")
    confirmed = await both.post(
        PROPOSE,
        json={
            **body(capability="payments.transfer", amount=5000),
            "confirmation_token": approved.json()["confirmation_token"],
        },
    )
    assert confirmed.json()["outcome"] == "ALLOW"
    assert (await records(server, "confirmation"))[0].payload["api_key_id"] == key_id


async def test_finding2_a_reviewer_named_like_the_actor_cannot_review(server: InProcessServer) -> None:
    agent = await client_for(server, "agent", ["governance:propose"], ["*"])
    pending = (await agent.post(PROPOSE, json=body("dave", "human", "payments.transfer", amount=5000))).json()
    dave = await client_for(server, "dave", ["governance:review"], None)
    refused = await dave.post(f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": True})
    assert refused.status_code == 403 and refused.json()["error"]["details"]["why"] == "reviewer_is_actor"


async def test_self_review_setting_allows_it_for_development(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    async with InProcessServer(policy_paths=[POLICIES], db_url=url, allow_self_review=True) as server:
        client = server.async_http_client()
        pending = (await client.post(PROPOSE, json=body(capability="payments.transfer", amount=5000))).json()
        approved = await client.post(
            f"/api/v1/governance/decisions/{pending['decision_id']}/review", json={"approve": True}
        )
        assert approved.status_code == 200 and approved.json()["review"]["status"] == "approved"


# -- finding 3: execution reports from the proposing key only -----------------------------------


async def test_finding3_only_the_proposing_key_reports_the_execution(server: InProcessServer) -> None:
    owner = await client_for(server, "owner", ["governance:propose"], ["*"])
    stranger = await client_for(server, "stranger", ["governance:propose"], ["*"])
    decision = (await owner.post(PROPOSE, json=body())).json()
    url = f"/api/v1/governance/decisions/{decision['decision_id']}/execution"

    forged = await stranger.post(url, json={"status": "FAILED"})
    assert forged.status_code == 403
    assert (forged.json()["error"]["type"], forged.json()["error"]["code"]) == ("governance_error", "not_proposer")
    rejected = await records(server, "execution_rejected")
    assert [(r.decision_id, r.payload["api_key_id"]) for r in rejected] == [
        (decision["decision_id"], await key_id_of(server, "stranger"))
    ]

    real = await owner.post(url, json={"status": "SUCCESS", "result": {"rows": 1}})
    assert real.status_code == 201
    execution = (await records(server, "execution"))[0]
    assert execution.payload["api_key_id"] == await key_id_of(server, "owner")


async def test_decisions_from_before_0002_stay_reportable_by_any_key(server: InProcessServer) -> None:
    owner = await client_for(server, "owner", ["governance:propose"], ["*"])
    other = await client_for(server, "other", ["governance:propose"], ["*"])
    decision = (await owner.post(PROPOSE, json=body())).json()
    async with server.store.engine.begin() as conn:
        await conn.execute(
            sa.update(decisions).where(decisions.c.decision_id == decision["decision_id"]).values(api_key_id=None)
        )
    url = f"/api/v1/governance/decisions/{decision['decision_id']}/execution"
    assert (await other.post(url, json={"status": "SUCCESS"})).status_code == 201


async def test_the_refusal_never_suggests_a_command_built_from_a_hostile_actor_id(server: InProcessServer) -> None:
    bot = await client_for(server, "bot", ["governance:propose"], ["ai-agent:bot-*"])
    refused = await bot.post(PROPOSE, json=body("x' ; rm -rf ~ ; echo '"))
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert "keys update" in message and "--actors 'ai-agent:x'" not in message and "echo '`" not in message


# -- found by a red-team pass on the merged code --------------------------------------------------


async def test_reviewer_names_are_compared_as_a_person_reads_them(server: InProcessServer) -> None:
    """`Support-Bot-1 ` (case, spaces, compatibility forms) is the actor `support-bot-1`; a key named like
    the proposing key is the proposer."""
    agent = await client_for(server, "pbot", ["governance:propose"], ["*"])
    for name, why in (("Support-Bot-1", "reviewer_is_actor"), ("ＰＢＯＴ", "reviewer_is_proposer")):
        pending = await agent.post(PROPOSE, json=body("support-bot-1", capability="payments.transfer", amount=5000))
        decision_id = pending.json()["decision_id"]
        reviewer = await client_for(server, name, ["governance:review"], None)
        refused = await reviewer.post(f"/api/v1/governance/decisions/{decision_id}/review", json={"approve": True})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["details"]["why"] == why
    other = await client_for(server, "erin", ["governance:review"], None)
    approved = await other.post(f"/api/v1/governance/decisions/{decision_id}/review", json={"approve": True})
    assert approved.status_code == 200, approved.text


async def test_a_token_minted_for_a_decision_that_cannot_be_confirmed_is_refused(server: InProcessServer) -> None:
    """Whoever reads the token secret can sign a token for any decision; the server confirms only a
    REQUIRE_CONFIRMATION or an approved ESCALATE, and `audit verify` flags any other parent."""
    from aegis_server.tokens import TokenSigner

    agent = await client_for(server, "minter", ["governance:propose", "governance:read"], ["*"])
    signer = TokenSigner(SECRET.encode("utf-8"))
    denied = (await agent.post(PROPOSE, json=body(capability="database.drop", table="users"))).json()
    pending = (await agent.post(PROPOSE, json=body(capability="payments.transfer", amount=5000))).json()
    assert (denied["outcome"], pending["outcome"]) == ("DENY", "ESCALATE")
    for parent, proposal in (
        (denied, body(capability="database.drop", table="users")),
        (pending, body(capability="payments.transfer", amount=5000)),
    ):
        binding = await server.store.get_decision_binding(parent["decision_id"])
        assert binding is not None
        token = signer.issue(
            decision_id=parent["decision_id"],
            actor_id=binding.actor_id,
            capability=binding.capability,
            params_hash=binding.params_hash,
            expires_at=datetime.now(timezone.utc) + timedelta(minutes=5),
        )
        refused = await agent.post(PROPOSE, json={**proposal, "confirmation_token": token})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "confirmation_invalid"
    rejected = await records(server, "confirmation_rejected")
    assert [r.payload["code"] for r in rejected] == ["confirmation_invalid"] * 2

    # The same forgery written straight into the database is found by the verification.
    async with server.store.engine.begin() as conn:
        row = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == denied["decision_id"]))).one()
        child = {**row._mapping, "decision_id": "dec_forged", "outcome": "ALLOW", "parent_decision_id": row.decision_id}
        child.pop("row_id")
        await conn.execute(sa.insert(decisions).values(**child))
    report = (await server.async_http_client().get("/api/v1/audit/verify")).json()
    assert "confirmation_without_approval" in {problem["code"] for problem in report["problems"]}


@pytest.mark.parametrize("stored", ['"ai-agent:support-bot-*"', "[null]", "[1]", '["ai-agent:"]'])
async def test_malformed_stored_actor_patterns_bind_the_key_to_no_actor(
    server: InProcessServer, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-edited `actors` value the CLI and API could not have written fails closed: a JSON string was
    read one character at a time, and its `*` let the key propose for anyone."""
    bot = await client_for(server, "edited", ["governance:propose"], ["ai-agent:support-bot-*"])
    key_id = await key_id_of(server, "edited")
    async with server.store.engine.begin() as conn:
        await conn.execute(sa.update(api_keys).where(api_keys.c.key_id == key_id).values(actors=sa.text(f"'{stored}'")))
    server.app.state.authenticator.forget_all()
    with caplog.at_level(logging.ERROR, logger="aegis_server.store"):
        refused = await bot.post(PROPOSE, json=body("finance-admin-agent", "human"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "actor_not_allowed"
    assert any("malformed" in record.getMessage() and key_id in record.getMessage() for record in caplog.records)
