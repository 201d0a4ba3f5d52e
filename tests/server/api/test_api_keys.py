"""The keys API (`/api/v1/keys`, scope admin), the keys CLI (create --actors/--rate-limit, update, list),
and the audit naming the key on every record of a decision."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import POLICIES, error_of, proposal, propose

from aegis_server.cli import main
from aegis_server.inprocess import InProcessServer
from aegis_server.key_actors import ActorBinding, parse_actor_patterns, parse_rate_limit
from aegis_server.store import AuditFilters, Store

KEYS = "/api/v1/keys"


# -- patterns -----------------------------------------------------------------------------------


def test_actor_patterns_match_type_and_id_with_exact_case() -> None:
    binding = ActorBinding(tuple(parse_actor_patterns("ai-agent:support-bot-*, human:alice ,*:svc:[ab]")))
    assert binding.allows("support-bot-1", "ai-agent")
    assert not binding.allows("support-bot-1", "human")
    assert not binding.allows("Support-Bot-1", "ai-agent")
    assert binding.allows("alice", "human") and not binding.allows("alice2", "human")
    assert binding.allows("svc:a", "automation") and not binding.allows("svc:c", "automation")
    assert ActorBinding(("*",)).allows("anyone", "human")
    assert not ActorBinding(None).allows("anyone", "human") and not ActorBinding(None).bound


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("robot:x", "unknown actor type 'robot'"),
        ("", "at least one actor pattern"),
        ("ai-agent:", "no id glob"),
        ("a b", "whitespace"),
        ("x" * 201, "longer than 200"),
    ],
)
def test_bad_actor_patterns_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_actor_patterns(text)


def test_rate_limit_text() -> None:
    assert parse_rate_limit("600/min") == 600 and parse_rate_limit("default") is None
    assert parse_rate_limit("0/min") == 0
    for bad in ("600", "600/s", "x/min", "-1/min"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)


# -- the keys API ---------------------------------------------------------------------------------


async def test_keys_api_create_list_get_update_revoke(server: InProcessServer, client: httpx.AsyncClient) -> None:
    created = await client.post(
        KEYS,
        json={
            "name": "bot",
            "scopes": ["governance:propose"],
            "actors": ["ai-agent:bot-*"],
            "rate_limit_per_minute": 120,
        },
    )
    assert created.status_code == 201, created.text
    info = created.json()
    secret = info.pop("api_key")
    assert secret.startswith("aegis_sk_")
    assert info["actors"] == ["ai-agent:bot-*"] and info["bound"] is True and info["rate_limit_per_minute"] == 120
    key_id = info["key_id"]

    listing = await client.get(KEYS)
    assert listing.status_code == 200
    assert secret not in listing.text and "key_hash" not in listing.text
    assert {k["name"] for k in listing.json()["items"]} == {"inprocess-admin", "bot"}
    got = await client.get(f"{KEYS}/{key_id}")
    assert got.json() == info

    bot = server.async_http_client(secret)
    assert (await propose(bot, proposal(actor="bot-1"))).status_code == 200
    assert (await propose(bot, proposal(actor="other"))).status_code == 403

    changed = await client.patch(f"{KEYS}/{key_id}", json={"actors": ["ai-agent:other"]})
    assert changed.status_code == 200 and changed.json()["rate_limit_per_minute"] == 120
    # applied at once on this replica (its cache is dropped), not after auth_cache_seconds
    assert (await propose(bot, proposal(actor="other"))).status_code == 200
    assert (await propose(bot, proposal(actor="bot-1"))).status_code == 403
    reset = await client.patch(f"{KEYS}/{key_id}", json={"rate_limit_per_minute": None})
    assert reset.json()["rate_limit_per_minute"] is None and reset.json()["actors"] == ["ai-agent:other"]

    assert (await client.delete(f"{KEYS}/{key_id}")).status_code == 204
    assert (await propose(bot, proposal(actor="other"))).status_code == 401
    assert (await client.delete(f"{KEYS}/{key_id}")).status_code == 404
    assert (await client.get(f"{KEYS}/{key_id}")).json()["status"] == "revoked"

    events = [(r.event_type, r.payload.get("by")) for r in (await server.store.audit_log(AuditFilters(), 200, None))[0]]
    admin_id = next(k.key_id for k in await server.store.list_api_keys() if k.name == "inprocess-admin")
    assert ("api_key_created", admin_id) in events
    assert [e for e in events if e[0] == "api_key_updated"] == [("api_key_updated", admin_id)] * 2
    assert ("api_key_revoked", admin_id) in events


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "p", "scopes": ["governance:propose"]}, "actors"),
        ({"name": "p", "scopes": ["admin"]}, "actors"),
        ({"name": "p", "scopes": ["governance:propose"], "actors": ["robot:x"]}, "actors"),
        ({"name": "p", "scopes": ["governance:everything"], "actors": ["*"]}, "scopes"),
        ({"name": " ", "scopes": ["governance:read"]}, "name"),
    ],
)
async def test_keys_api_refuses_bad_keys(client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    response = await client.post(KEYS, json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["details"]["field"] == field


async def test_keys_api_needs_admin_and_answers_404(server: InProcessServer, client: httpx.AsyncClient) -> None:
    reviewer = server.async_http_client(await server.acreate_key("ops", ["governance:review", "governance:read"]))
    refused = await reviewer.get(KEYS)
    assert refused.status_code == 403 and error_of(refused)["code"] == "missing_scope"
    assert (await client.get(f"{KEYS}/key_nope")).status_code == 404
    assert (await client.patch(f"{KEYS}/key_nope", json={"actors": ["*"]})).status_code == 404
    assert (await client.patch(f"{KEYS}/key_nope", json={})).status_code == 422
    assert (await client.patch(f"{KEYS}/key_nope", json={"actors": None})).status_code == 422
    review_only = await client.post(KEYS, json={"name": "r", "scopes": ["governance:review"]})
    assert review_only.status_code == 201 and review_only.json()["actors"] is None


# -- the audit names the key ------------------------------------------------------------------------


async def test_every_record_of_a_decision_names_the_key(server: InProcessServer, client: httpx.AsyncClient) -> None:
    admin_id = next(k.key_id for k in await server.store.list_api_keys())
    reviewer = server.async_http_client(await server.acreate_key("alice", ["governance:review"]))
    reviewer_id = next(k.key_id for k in await server.store.list_api_keys() if k.name == "alice")
    body = proposal("payments.transfer", amount=5000)
    pending = (await propose(client, body)).json()
    url = f"/api/v1/governance/decisions/{pending['decision_id']}"
    approved = (await reviewer.post(f"{url}/review", json={"approve": True})).json()
    allowed = (await propose(client, {**body, "confirmation_token": approved["confirmation_token"]})).json()
    assert (
        await client.post(
            f"/api/v1/governance/decisions/{allowed['decision_id']}/execution", json={"status": "SUCCESS"}
        )
    ).status_code == 201
    assert (await propose(client, proposal("no.such"))).status_code == 404

    records = (await server.store.audit_log(AuditFilters(), 200, None))[0]
    by_type: dict[str, list[Any]] = {}
    for record in records:
        by_type.setdefault(record.event_type, []).append(record.payload)
    for event in ("proposal", "decision", "confirmation", "execution", "proposal_rejected"):
        assert {p["api_key_id"] for p in by_type[event]} == {admin_id}, event
    assert by_type["review"] == [
        {**by_type["review"][0], "api_key_id": reviewer_id, "reviewer_via": "api", "reviewer": "alice"}
    ]
    assert "aegis_sk_" not in str(records)


# -- the keys CLI -------------------------------------------------------------------------------------


def _cli(db: str, *args: str) -> int:
    return main([*args, "--db", db])


def test_cli_create_needs_actors_for_a_proposing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    assert _cli(db, "keys", "create", "--name", "bot", "--scopes", "governance:propose") == 2
    err = capsys.readouterr().err
    assert "--actors 'ai-agent:support-bot-*'" in err and "'*' for any actor" in err
    assert _cli(db, "keys", "create", "--name", "bot", "--scopes", "admin", "--actors", "robot:x") == 2
    assert "unknown actor type 'robot'" in capsys.readouterr().err
    assert _cli(db, "keys", "create", "--name", "bot", "--scopes", "admin", "--actors", "*", "--rate-limit", "9") == 2
    assert "N/min" in capsys.readouterr().err
    assert _cli(db, "keys", "create", "--name", "ops", "--scopes", "governance:review") == 0
    assert (
        _cli(
            db,
            "keys",
            "create",
            "--name",
            "bot",
            "--scopes",
            "governance:propose",
            "--actors",
            "ai-agent:bot-*",
            "--rate-limit",
            "60/min",
        )
        == 0
    )
    capsys.readouterr()
    assert _cli(db, "keys", "list") == 0
    listing = capsys.readouterr().out
    bot_line = next(line for line in listing.splitlines() if " bot " in line)
    assert "60/min" in bot_line and "ai-agent:bot-*" in bot_line


def test_cli_update_binds_a_migrated_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    assert _cli(db, "keys", "create", "--name", "legacy", "--scopes", "governance:propose", "--actors", "*") == 0
    secret = capsys.readouterr().out.strip()
    with sqlite3.connect(tmp_path / "keys.db") as conn:  # what migration 0003 leaves for a key made in 0.1
        conn.execute("UPDATE api_keys SET actors = NULL")
    assert _cli(db, "keys", "list") == 0
    listing = capsys.readouterr().out
    assert "UNBOUND" in listing and "keys update KEY_ID --actors" in listing
    key_id = next(line.split()[0] for line in listing.splitlines() if "legacy" in line)

    assert _cli(db, "keys", "update", key_id) == 2
    assert "nothing to change" in capsys.readouterr().err
    assert _cli(db, "keys", "update", "key_nope", "--actors", "*") == 1
    capsys.readouterr()
    assert _cli(db, "keys", "update", key_id, "--actors", "ai-agent:a-*", "--rate-limit", "30/min") == 0
    assert "actors ai-agent:a-*, rate limit 30/min" in capsys.readouterr().out
    assert _cli(db, "keys", "update", key_id, "--rate-limit", "default") == 0
    capsys.readouterr()

    async def check() -> tuple[Any, ...]:
        store = await Store.open(db, migrate=False)
        try:
            key = await store.authenticate(secret)
            assert key is not None
            return key.actors, key.rate_limit_per_minute
        finally:
            await store.close()

    assert asyncio.run(check()) == (("ai-agent:a-*",), None)
    with InProcessServer(policy_paths=[POLICIES], db_url=db) as server:
        bot = server.http_client(secret)
        assert bot.post("/api/v1/governance/propose", json=proposal(actor="a-1")).status_code == 200
        assert bot.post("/api/v1/governance/propose", json=proposal(actor="b-1")).status_code == 403


def test_cli_review_by_the_actor_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'review.db'}"
    with InProcessServer(policy_paths=[POLICIES], db_url=db) as server:
        pending = (
            server.http_client()
            .post("/api/v1/governance/propose", json=proposal("payments.transfer", actor="carol", amount=5000))
            .json()
        )
    assert _cli(db, "review", "approve", pending["decision_id"], "--reviewer", "carol") == 1
    assert "separation of duties" in capsys.readouterr().err
    assert _cli(db, "review", "approve", pending["decision_id"], "--reviewer", "dave") == 0
    with InProcessServer(policy_paths=[POLICIES], db_url=db) as server:
        trail = server.http_client().get(f"/api/v1/audit/log/{pending['decision_id']}").json()["records"]
    review = next(r for r in trail if r["event_type"] == "review")
    assert (review["payload"]["api_key_id"], review["payload"]["reviewer_via"]) == (None, "cli")
    assert [r["payload"]["why"] for r in trail if r["event_type"] == "review_rejected"] == ["reviewer_is_actor"]
