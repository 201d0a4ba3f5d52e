"""The AEGIS story in one run: a real aegis-server on SQLite, driven through aegis-sdk.

    make demo            # or: uv run python examples/demo.py

It starts `aegis-server serve` on a free loopback port with a fresh SQLite database in a temporary
folder and the example policies in examples/policies/, creates an agent key and a reviewer key with the
CLI, then shows every outcome, a confirmation round trip, an approved and an expired escalation, a
replayed token refused, an execution report, the audit trail and the verified hash chain.
Nothing leaves 127.0.0.1; the exit code is 0 only if every step behaved as shown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aegis_sdk import (
    AegisClient,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    Decision,
    UnknownCapabilityError,
)

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "policies"
AGENT = {"id": "support-bot-7", "type": "ai-agent"}
SESSION = {"session_id": "sess_demo_001", "metadata": {"source": "aegis-demo"}}

AGENT_SCOPES = "governance:propose,governance:read,audit:read"
REVIEWER_SCOPES = "governance:review,governance:read"


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    decision: Decision


ROWS: list[Row] = []


def heading(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}")


def show(step: str, decision: Decision) -> Decision:
    ROWS.append(Row(step, decision))
    print(f"  {decision.outcome:<21} risk {decision.risk_score:.2f}  {decision.decision_id}  {step}")
    print(textwrap.indent(textwrap.fill(decision.reason, 96), "      "))
    return decision


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"demo failed: {what}")


def print_table() -> None:
    heading("Every decision of this run")
    print(f"  {'step':<44} {'outcome':<21} {'risk':>5}  {'parent':<10} reason")
    for row in ROWS:
        d = row.decision
        parent = "yes" if d.parent_decision_id else ""
        reason = d.reason if len(d.reason) <= 60 else d.reason[:57] + "..."
        print(f"  {row.step:<44} {d.outcome:<21} {d.risk_score:>5.2f}  {parent:<10} {reason}")


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str, db_url: str) -> str:
    """Run `aegis-server ARGS --db URL` and return its stdout."""
    command = [sys.executable, "-m", "aegis_server", *args, "--db", db_url]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"demo failed: aegis-server {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


@contextmanager
def running_server(db_url: str, port: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "aegis_server", "serve",
        "--db", db_url, "--policy", str(POLICIES), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "AEGIS_LOG_LEVEL": os.environ.get("AEGIS_LOG_LEVEL", "warning")}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(server.stdout or []), daemon=True)
    reader.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                reader.join(timeout=2)
                raise SystemExit(f"demo failed: aegis-server exited early:\n{''.join(output)}")
            try:
                if httpx.get(f"{endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"demo failed: aegis-server not ready after 30 s:\n{''.join(output)}")
            time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------
# The story
# ---------------------------------------------------------------------------------------------


def four_outcomes(aegis: AegisClient) -> None:
    heading("1. Four outcomes from the example policies")
    d = show(
        "SELECT on production",
        aegis.propose(
            actor=AGENT,
            action={
                "capability": "database.query",
                "parameters": {"query": "SELECT * FROM users LIMIT 10", "database": "production"},
            },
            context=SESSION,
        ),
    )
    expect(d.outcome == "ALLOW" and d.constraints.get("max_rows") == 1000, "a read is allowed with max_rows")
    d = show(
        "DROP TABLE on production",
        aegis.propose(
            actor=AGENT,
            action={
                "capability": "database.query",
                "parameters": {"query": "DROP TABLE users", "database": "production"},
            },
            context=SESSION,
        ),
    )
    expect(d.outcome == "DENY", "destructive SQL is denied")
    d = show(
        "refund 5,000 EUR",
        aegis.propose(
            actor=AGENT,
            action={
                "capability": "payments.refund",
                "parameters": {"order_id": "ord_9", "amount": 5000, "currency": "EUR"},
            },
            context=SESSION,
        ),
    )
    expect(
        d.outcome == "ESCALATE" and d.review is not None and d.review.status == "pending", "a large refund escalates"
    )
    d = show(
        "refund 250 EUR",
        aegis.propose(
            actor=AGENT,
            action={
                "capability": "payments.refund",
                "parameters": {"order_id": "ord_7", "amount": 250, "currency": "EUR"},
            },
            context=SESSION,
        ),
    )
    expect(d.outcome == "REQUIRE_CONFIRMATION" and d.confirmation_token is not None, "a medium refund needs consent")
    try:
        aegis.propose(actor=AGENT, action={"capability": "payments.refnd", "parameters": {}})
        expect(False, "an unknown capability is refused")
    except UnknownCapabilityError as error:
        print(f"  unknown capability refused: {error.message}")


def confirmation_round_trip(aegis: AegisClient) -> None:
    heading("2. Confirmation round trip, then the same token replayed")
    refund = {"capability": "payments.refund", "parameters": {"order_id": "ord_8", "amount": 400, "currency": "EUR"}}
    asked = show("refund 400 EUR", aegis.propose(actor=AGENT, action=refund, context=SESSION))
    expect(asked.outcome == "REQUIRE_CONFIRMATION", "confirmation asked")
    print("  ... the user says yes; the agent resubmits with the token")
    confirmed = show("refund 400 EUR, confirmed", aegis.confirm(asked))
    expect(confirmed.outcome == "ALLOW" and confirmed.parent_decision_id == asked.decision_id, "the token allows it")
    record = aegis.decisions.report_execution(confirmed.decision_id, status="SUCCESS", duration_ms=42.0)
    print(f"  execution reported: {record.status} ({record.audit_ref})")
    try:
        aegis.propose(actor=AGENT, action=refund, context=SESSION, confirmation_token=asked.confirmation_token)
        expect(False, "a replayed token is refused")
    except ConfirmationUsedError as error:
        print(f"  replayed token refused: {error.code} (HTTP {error.status_code})")
    tampered = {**refund, "parameters": {**refund["parameters"], "amount": 900}}
    second = aegis.propose(actor=AGENT, action=refund, context=SESSION)
    try:
        aegis.propose(actor=AGENT, action=tampered, context=SESSION, confirmation_token=second.confirmation_token)
        expect(False, "a token for 400 does not pay 900")
    except ConfirmationMismatchError as error:
        print(f"  token presented for another amount refused: {error.code}")


def escalations(aegis: AegisClient, reviewer: AegisClient) -> None:
    heading("3. Escalation approved by a reviewer")
    refund = {"capability": "payments.refund", "parameters": {"order_id": "ord_10", "amount": 2500, "currency": "EUR"}}
    pending = show("refund 2,500 EUR", aegis.propose(actor=AGENT, action=refund, context=SESSION))
    expect(pending.outcome == "ESCALATE", "a large refund escalates")
    reviewed = reviewer.decisions.review(pending.decision_id, approve=True, note="customer verified by phone")
    expect(reviewed.review is not None and reviewed.review.status == "approved", "the reviewer approves")
    print(f"  reviewer alice-ops: {reviewed.review.status if reviewed.review else '?'}")
    allowed = show("refund 2,500 EUR, after approval", aegis.wait_for_review(pending, timeout=10))
    expect(allowed.outcome == "ALLOW" and allowed.parent_decision_id == pending.decision_id, "approval lets it run")
    aegis.decisions.report_execution(allowed.decision_id, status="SUCCESS", duration_ms=120.0)

    heading("4. Escalation nobody reviews: it expires into a final DENY")
    deploy = {"capability": "deploy.production", "parameters": {"service": "billing", "version": "2.4.1"}}
    waiting = show("deploy billing 2.4.1", aegis.propose(actor=AGENT, action=deploy, context=SESSION))
    expect(waiting.outcome == "ESCALATE", "deploys escalate")
    print(f"  review deadline {waiting.expires_at}; waiting...")
    final = show("deploy billing 2.4.1, review window over", aegis.wait_for_review(waiting, timeout=15))
    expect(final.outcome == "DENY" and final.review is not None and final.review.status == "expired", "expiry denies")


def audit(aegis: AegisClient) -> None:
    heading("5. The audit trail of one decision, and the whole chain verified")
    last_allow = next(row.decision for row in reversed(ROWS) if row.decision.outcome == "ALLOW")
    trail = aegis.audit.trail(last_allow.decision_id)
    for record in trail.records:
        print(f"  #{record.sequence:<4} {record.event_type:<24} {record.hash[:16]}… prev {record.previous_hash[:16]}…")
    records = list(aegis.audit.log(limit=200))
    verification = aegis.audit.verify()
    print(
        f"  audit records: {len(records)}; chain valid: {verification.valid} ({verification.records_checked} checked)"
    )
    expect(verification.valid and verification.records_checked == len(records), "the chain verifies")


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aegis-demo-") as folder:
        db_url = f"sqlite+aiosqlite:///{Path(folder) / 'aegis.db'}"
        heading("0. Start aegis-server on SQLite with the example policies")
        cli("db", "upgrade", db_url=db_url)
        agent_key = cli("keys", "create", "--name", "support-bot", "--scopes", AGENT_SCOPES, db_url=db_url).strip()
        reviewer_key = cli("keys", "create", "--name", "alice-ops", "--scopes", REVIEWER_SCOPES, db_url=db_url).strip()
        with running_server(db_url, free_port()) as endpoint:
            print(f"  serving {endpoint} (database {db_url})")
            with (
                AegisClient(endpoint=endpoint, api_key=agent_key) as aegis,
                AegisClient(endpoint=endpoint, api_key=reviewer_key) as reviewer,
            ):
                four_outcomes(aegis)
                confirmation_round_trip(aegis)
                escalations(aegis, reviewer)
                audit(aegis)
        print_table()
        verified = cli("audit", "verify", db_url=db_url)
        print(f"\n  aegis-server audit verify: {verified.strip()}")
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
