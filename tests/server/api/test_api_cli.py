"""The `aegis-server` CLI: keys, reviews, audit verification, db upgrade, argument and database errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from conftest import POLICIES

from aegis_server.cli import main
from aegis_server.inprocess import InProcessServer
from aegis_server.store import Store


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"


def _escalate(db: str, api_key: str | None = None) -> str:
    """Create one pending ESCALATE in `db` through the API (with `api_key`, else a new admin key); returns its id."""
    with InProcessServer(policy_paths=[POLICIES], db_url=db) as server:
        body = {"actor": {"id": "a"}, "action": {"capability": "payments.transfer", "parameters": {"amount": 5000}}}
        decision = server.http_client(api_key).post("/api/v1/governance/propose", json=body).json()
    assert decision["outcome"] == "ESCALATE"
    return str(decision["decision_id"])


def test_keys_create_prints_only_the_key(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    scopes = "governance:propose,governance:read"
    assert (
        main(["keys", "create", "--db", db, "--name", "agent", "--scopes", scopes, "--actors", "ai-agent:agent-*"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    key = out.strip()
    assert key.startswith("aegis_sk_")

    async def check() -> tuple[str, ...] | None:
        store = await Store.open(db, migrate=False)
        try:
            found = await store.authenticate(key)
            return found.scopes if found else None
        finally:
            await store.close()

    assert asyncio.run(check()) == ("governance:propose", "governance:read")


def test_keys_list_and_revoke(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "create", "--db", db, "--name", "reviewer-bob", "--scopes", "governance:review"])
    key = capsys.readouterr().out.strip()
    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "reviewer-bob" in listing and "active" in listing
    assert key not in listing
    key_id = next(line.split()[0] for line in listing.splitlines() if "reviewer-bob" in line)
    assert main(["keys", "revoke", "--db", db, key_id]) == 0
    assert main(["keys", "list", "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "--db", db, "key_missing"]) == 1
    assert "no active API key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "x", "--scopes", "root"],
        ["keys", "create", "--name", "x"],
        ["keys", "create", "--name", " ", "--scopes", "admin"],
        ["review", "approve"],
        ["nonsense"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--db", db] if argv[:2] == ["keys", "create"] else argv) == 2
    err = capsys.readouterr().err
    assert err and "Traceback" not in err


def test_unreachable_database_exits_1_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    assert main(["keys", "list", "--db", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aegis-server: error: cannot use the database")
    assert "Traceback" not in err


def test_database_without_schema_says_how_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    assert main(["audit", "verify", "--db", url]) == 1
    assert "no SQLite database" in capsys.readouterr().err
    sqlite3.connect(tmp_path / "empty.db").close()
    assert main(["audit", "verify", "--db", url]) == 1
    assert "db upgrade" in capsys.readouterr().err
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "revision" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", url]) == 0


def test_review_list_approve_and_deny(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--db", db, "--name", "agent", "--scopes", "admin", "--actors", "a"]) == 0
    agent_key = capsys.readouterr().out.strip()
    first, second = _escalate(db, agent_key), _escalate(db, agent_key)
    assert main(["review", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert first in listing and second in listing
    assert main(["review", "approve", first, "--db", db, "--note", "fine", "--reviewer", "carol"]) == 0
    assert "approved by carol" in capsys.readouterr().out
    assert main(["review", "deny", second, "--db", db]) == 0
    capsys.readouterr()
    assert main(["review", "deny", second, "--db", db]) == 1
    assert "not awaiting review" in capsys.readouterr().err
    assert main(["review", "list", "--db", db]) == 0
    assert "no decisions await review" in capsys.readouterr().out

    with InProcessServer(policy_paths=[POLICIES], db_url=db) as server:
        client = server.http_client(agent_key)
        approved = client.get(f"/api/v1/governance/decisions/{first}").json()
        assert approved["review"]["reviewer"] == "carol"
        body = {
            "actor": {"id": "a"},
            "action": {"capability": "payments.transfer", "parameters": {"amount": 5000}},
            "confirmation_token": approved["confirmation_token"],
        }
        # The approval token works for the key that proposed, not for another key that read it.
        stolen = server.http_client().post("/api/v1/governance/propose", json=body)
        assert stolen.status_code == 409 and stolen.json()["error"]["code"] == "confirmation_mismatch"
        assert stolen.json()["error"]["details"]["mismatched"] == ["api_key"]
        assert client.post("/api/v1/governance/propose", json=body).json()["outcome"] == "ALLOW"


def test_audit_verify_exits_1_naming_the_tampered_record(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    _escalate(db)
    assert main(["audit", "verify", "--db", db]) == 0
    assert "audit chain OK" in capsys.readouterr().out

    path = db.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:
        ref = conn.execute("SELECT audit_ref FROM audit_records WHERE sequence = 2").fetchone()[0]
        conn.execute("UPDATE audit_records SET actor_id = 'mallory' WHERE sequence = 2")
    assert main(["audit", "verify", "--db", db]) == 1
    err = capsys.readouterr().err
    assert "record #2" in err
    assert ref in err


def test_policy_commands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(POLICIES)]) == 0
    capsys.readouterr()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aegis-server ")
