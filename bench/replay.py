"""Replaying 1,000,000 stored proposals under a stricter candidate (issue 17: under a minute), from the CLI.

- seeding: a fresh SQLite database (migrated by the store) gets 1,000,000 decided proposals written directly
  (stdlib sqlite3, one transaction): `decisions` rows and their "proposal" and "decision" audit records, over
  seven days, for a mix of five capabilities, one with an `x-sensitive` field (a card number, stored as its
  keyed hash), and confirmation resubmissions (about 4% of the rows, each consuming the token of a
  REQUIRE_CONFIRMATION). The outcomes are the original policy set's, from the engine
  (a pool of distinct proposals decided once and repeated). The audit records are NOT chain-valid (their
  `previous_hash`/`hash` are placeholders): the replay reader never checks the chain;
- `replay`: `aegis-server policy replay --since 8d --candidate DIR --json` in a subprocess, timed end to end
  (interpreter start, the worker processes, reading, re-deciding, the report), with the report's own numbers;
- baseline: the raw read of the same rows (`SELECT payload` of every "proposal" record, stdlib sqlite3, no
  parsing) in this process: the floor of any replay; the ratio is replay / raw read.

Run alone: `python -m bench.replay` (prints JSON and writes bench/results/replay.json; `--quick` for 100,000
proposals, nothing written). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import yaml

from aegis_sdk.models import Capability, Policy, Proposal
from aegis_server.engine import EngineConfig, compile_policy_set, evaluate

from ._common import RESULTS_DIR, dump_json, machine

PROPOSALS = 1_000_000
TARGET_SECONDS = 60.0
POOL = 20_000  # distinct proposals decided by the engine, repeated to fill the table
CONFIRMATION_CHANCE = 0.08  # that a REQUIRE_CONFIRMATION is confirmed by the next row
DAYS = 7


def _rule(rule_id: str, capability: str, outcome: str, condition: str) -> dict[str, Any]:
    return {"id": rule_id, "capability": capability, "outcome": outcome, "condition": condition}


CAPABILITIES: list[dict[str, Any]] = [
    {
        "name": "crm.refund",
        "risk_level": "medium",
        "parameter_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
        },
    },
    {
        "name": "db.query",
        "risk_level": "medium",
        "parameter_schema": {
            "type": "object",
            "properties": {"sql": {"type": "string"}, "database": {"type": "string"}},
            "required": ["sql"],
        },
    },
    {
        "name": "email.send",
        "risk_level": "low",
        "parameter_schema": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
            "required": ["to"],
        },
    },
    {
        "name": "payments.charge",
        "risk_level": "medium",
        "parameter_schema": {
            "type": "object",
            "properties": {"card_number": {"type": "string", "x-sensitive": True}, "amount": {"type": "number"}},
            "required": ["card_number", "amount"],
        },
    },
    {
        "name": "files.read",
        "risk_level": "low",
        "parameter_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
]

ORIGINAL_POLICIES: list[dict[str, Any]] = [
    {
        "name": "refunds",
        "rules": [
            {
                "id": "small",
                "capability": "crm.refund",
                "outcome": "ALLOW",
                "condition": "action.parameters.amount < 500",
            },
            {
                "id": "large",
                "capability": "crm.refund",
                "outcome": "ESCALATE",
                "condition": "action.parameters.amount >= 500",
            },
        ],
    },
    {
        "name": "queries",
        "rules": [
            {"id": "read", "capability": "db.query", "outcome": "ALLOW"},
            {
                "id": "destructive",
                "capability": "db.query",
                "outcome": "DENY",
                "condition": "action.parameters.sql.matches('(?i)\\\\b(drop|delete|truncate)\\\\b')",
            },
        ],
    },
    {"name": "mail", "rules": [{"id": "any", "capability": "email.send", "outcome": "ALLOW"}]},
    {
        "name": "payments",
        "rules": [
            {
                "id": "small",
                "capability": "payments.charge",
                "outcome": "ALLOW",
                "condition": "action.parameters.amount <= 100",
            },
            {
                "id": "large",
                "capability": "payments.charge",
                "outcome": "REQUIRE_CONFIRMATION",
                "condition": "action.parameters.amount > 100",
            },
        ],
    },
    {"name": "files", "rules": [{"id": "any", "capability": "files.read", "outcome": "ALLOW"}]},
]


def _stricter() -> list[dict[str, Any]]:
    """The candidate: smaller refunds, mail outside the company confirmed, queries at night escalated, a rule
    on the card number (its proposals are not replayable), and no reading of /etc."""
    policies = json.loads(json.dumps(ORIGINAL_POLICIES))
    refunds = policies[0]["rules"]
    refunds[0]["condition"] = "action.parameters.amount < 200"
    refunds[1]["condition"] = "action.parameters.amount >= 200"
    policies[1]["rules"].append(
        {
            "id": "night",
            "capability": "db.query",
            "outcome": "ESCALATE",
            "condition": "time.hour < 6 || time.hour >= 22",
        }
    )
    policies[2]["rules"].append(
        {
            "id": "external",
            "capability": "email.send",
            "outcome": "REQUIRE_CONFIRMATION",
            "condition": "!action.parameters.to.endsWith('@example.com')",
        }
    )
    policies[3]["rules"].append(
        {
            "id": "test-cards",
            "capability": "payments.charge",
            "outcome": "DENY",
            "condition": "action.parameters.card_number.startsWith('4000')",
        }
    )
    policies[4]["rules"].append(
        {
            "id": "system",
            "capability": "files.read",
            "outcome": "DENY",
            "condition": "action.parameters.path.startsWith('/etc/')",
        }
    )
    return policies


def _parameters(capability: str, rng: random.Random) -> dict[str, Any]:
    if capability == "crm.refund":
        return {"order_id": f"A-{rng.randrange(100_000)}", "amount": round(rng.uniform(1, 900), 2)}
    if capability == "db.query":
        verb = rng.choice(["SELECT * FROM orders WHERE id = 1", "SELECT count(*) FROM users", "DELETE FROM tmp"])
        return {"sql": verb, "database": rng.choice(["crm", "billing"])}
    if capability == "email.send":
        return {"to": rng.choice(["ann@example.com", "bob@example.com", "eve@partner.org"]), "subject": "update"}
    if capability == "payments.charge":
        card = rng.choice(["4000", "5500", "4111"]) + "".join(str(rng.randrange(10)) for _ in range(12))
        return {"card_number": card, "amount": round(rng.uniform(5, 300), 2)}
    return {"path": rng.choice(["/srv/data/report.csv", "/etc/passwd", "/home/app/notes.txt"])}


def _sqlite_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _pool(rng: random.Random) -> list[dict[str, Any]]:
    """Distinct proposals with the original set's decision: the audit payload and the decision's columns."""
    original = compile_policy_set(
        [Policy.model_validate(p) for p in ORIGINAL_POLICIES], [Capability.model_validate(c) for c in CAPABILITIES]
    )
    config = EngineConfig()
    weights = [("crm.refund", 30), ("db.query", 25), ("email.send", 20), ("payments.charge", 10), ("files.read", 15)]
    names = [name for name, weight in weights for _ in range(weight)]
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    pool = []
    for index in range(POOL):
        capability = rng.choice(names)
        actor = {"id": f"agent-{index % 50}", "type": "ai-agent"}
        proposal = Proposal.model_validate(
            {
                "actor": actor,
                "action": {"capability": capability, "parameters": _parameters(capability, rng)},
                "context": {"session_id": f"s-{index % 500}"},
            }
        )
        evaluation = evaluate(proposal, original, now=now, config=config)
        payload = {
            "actor": actor,
            "action": {
                "capability": capability,
                "params_hash": secrets.token_hex(32),
                "parameters": evaluation.audit_parameters,
            },
            "context": {"session_id": proposal.context.session_id, "metadata": {}},
            "confirmation": False,
            "api_key_id": "key_bench",
        }
        pool.append(
            {
                "capability": capability,
                "actor_id": actor["id"],
                "session_id": proposal.context.session_id,
                "outcome": evaluation.outcome,
                "reason": evaluation.reason,
                "risk": evaluation.risk_score,
                "policy_ids": orjson.dumps(evaluation.policy_ids).decode(),
                "payload": orjson.dumps(payload).decode(),
                "decision_payload": orjson.dumps(
                    {"outcome": evaluation.outcome, "policy_ids": evaluation.policy_ids, "policy_version": 1}
                ).decode(),
            }
        )
    return pool


def seed(path: Path, proposals: int, start: datetime) -> dict[str, Any]:
    """Migrate a new database with the store, then write the rows directly."""
    from aegis_server.store import Store

    async def migrate() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        await store.close()

    asyncio.run(migrate())
    rng = random.Random(17)
    t0 = time.perf_counter()
    pool = _pool(rng)
    pool_s = time.perf_counter() - t0
    step = timedelta(days=DAYS) / proposals
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    decision_rows: list[tuple[Any, ...]] = []
    audit_rows: list[tuple[Any, ...]] = []
    sequence = 0
    placeholder = "0" * 64
    last_confirmable: str | None = None
    t1 = time.perf_counter()
    with connection:
        for index in range(proposals):
            item = pool[index % POOL]
            moment = start + step * index
            created = _sqlite_time(moment)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            decision_id = f"dec_{index:024d}"
            parent = None
            payload = item["payload"]
            outcome = item["outcome"]
            if last_confirmable is not None and rng.random() < CONFIRMATION_CHANCE:
                parent, last_confirmable, outcome = last_confirmable, None, "ALLOW"
                payload = payload.replace('"confirmation":false', '"confirmation":true')
            elif outcome == "REQUIRE_CONFIRMATION":
                last_confirmable = decision_id
            decision_rows.append(
                (
                    decision_id,
                    outcome,
                    item["reason"],
                    item["risk"],
                    "{}",
                    item["policy_ids"],
                    stamp,
                    created,
                    f"aud_{index}_d",
                    item["actor_id"],
                    "ai-agent",
                    item["capability"],
                    item["session_id"],
                    placeholder,
                    "key_bench",
                    parent,
                    1,
                )
            )
            for kind, record_payload, record_outcome in (
                ("proposal", payload, None),
                ("decision", item["decision_payload"], outcome),
            ):
                sequence += 1
                audit_rows.append(
                    (
                        sequence,
                        f"aud_{index}_{kind[0]}{sequence}",
                        kind,
                        decision_id,
                        item["actor_id"],
                        item["capability"],
                        record_outcome,
                        item["session_id"],
                        stamp,
                        created,
                        record_payload,
                        placeholder,
                        placeholder,
                    )
                )
            if len(audit_rows) >= 100_000:
                _flush(connection, decision_rows, audit_rows)
        _flush(connection, decision_rows, audit_rows)
    connection.close()
    return {"pool_s": round(pool_s, 1), "insert_s": round(time.perf_counter() - t1, 1), "audit_records": sequence}


def _flush(
    connection: sqlite3.Connection, decision_rows: list[tuple[Any, ...]], audit_rows: list[tuple[Any, ...]]
) -> None:
    connection.executemany(
        "INSERT INTO decisions (decision_id, outcome, reason, risk_score, constraints, policy_ids, timestamp, "
        "created_at, audit_ref, actor_id, actor_type, capability, session_id, params_hash, api_key_id, "
        "parent_decision_id, policy_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        decision_rows,
    )
    connection.executemany(
        "INSERT INTO audit_records (sequence, audit_ref, event_type, decision_id, actor_id, capability, outcome, "
        "session_id, timestamp, created_at, payload, previous_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        audit_rows,
    )
    decision_rows.clear()
    audit_rows.clear()


def raw_read(path: Path) -> float:
    """Seconds to fetch every "proposal" record's payload, unparsed (the baseline)."""
    connection = sqlite3.connect(path)
    t0 = time.perf_counter()
    cursor = connection.execute("SELECT payload FROM audit_records WHERE event_type = 'proposal' ORDER BY sequence")
    count = 0
    while rows := cursor.fetchmany(20_000):
        count += len(rows)
    elapsed = time.perf_counter() - t0
    connection.close()
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    proposals = PROPOSALS // 10 if quick else PROPOSALS
    with tempfile.TemporaryDirectory(prefix="aegis-replay-") as tmp:
        directory = Path(tmp)
        database = directory / "replay.db"
        start = datetime.now(timezone.utc) - timedelta(days=DAYS, minutes=5)
        t0 = time.perf_counter()
        seeding = seed(database, proposals, start)
        seed_s = time.perf_counter() - t0
        candidate = directory / "candidate"
        candidate.mkdir()
        (candidate / "candidate.yaml").write_text(
            yaml.safe_dump({"capabilities": CAPABILITIES, "policies": _stricter()}, sort_keys=False)
        )
        baseline_s = raw_read(database)
        command = [
            sys.executable, "-m", "aegis_server", "policy", "replay", "--since", f"{DAYS + 1}d",
            "--candidate", str(candidate), "--db", f"sqlite:///{database}", "--json",
        ]  # fmt: skip
        env = {**os.environ, "AEGIS_AUDIT_CHECKPOINT_DIR": str(directory)}
        t1 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        replay_s = time.perf_counter() - t1
    if done.returncode != 0:
        return {"error": f"the CLI exited {done.returncode}: {done.stderr[-2000:]}"}
    report = json.loads(done.stdout)
    return {
        "proposals": proposals,
        "seed": {**seeding, "total_s": round(seed_s, 1)},
        "replay_cli_s": round(replay_s, 2),
        "replay_report_s": report["elapsed_seconds"],
        "proposals_per_s": round(proposals / replay_s),
        "baseline_raw_read_s": round(baseline_s, 2),
        "ratio_replay_to_raw_read": round(replay_s / baseline_s, 1) if baseline_s else None,
        "target_s": TARGET_SECONDS,
        "within_target": replay_s < TARGET_SECONDS * proposals / PROPOSALS,
        "totals": report["totals"],
        "transitions": [
            {"from": t["from"], "to": t["to"], "count": t["count"], "rules": t["rules"]} for t in report["transitions"]
        ],
        "workers": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 proposals instead of 1,000,000")
    args = parser.parse_args(argv)
    results = {"machine": machine(), **run(args.quick)}
    if not args.quick:
        dump_json(RESULTS_DIR / "replay.json", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
