"""The AEGIS story in one run: a real aegis-server on SQLite, driven by the SDK, a FastAPI app and a
LangChain agent.

    make demo            # or: uv run python examples/demo.py

It starts `aegis-server serve` on a free loopback port with a fresh SQLite database in a temporary
folder and the example policies in examples/policies/, creates an agent key and a reviewer key with the
aegis-server CLI (its `main()`, run in this process to save an interpreter start), then shows:

1. plain SDK calls with all four outcomes (and an unknown capability refused); the escalated production
   deploy is left unreviewed, and its 2-second review window runs while the story goes on;
2. a confirmation round trip, the same token replayed and a token presented for another amount, refused;
3. an escalation approved through the reviewer flow;
4. the governed FastAPI app of examples/fastapi_app.py, served by uvicorn on a loopback port and called
   over HTTP: allowed, denied, confirmed with a header, escalated then approved;
5. the LangChain agent of examples/langchain_agent.py (a scripted fake chat model, no LLM service): its
   governed tools are allowed, denied, confirmed, declined and escalated;
6. an MCP server (examples/mcp_tools_server.py) behind the governing proxy `aegis-mcp proxy`, started as a
   subprocess and driven by the MCP SDK's client over stdio: a tool allowed, one denied, one confirmed and
   one declined by the user through MCP elicitation, one escalated and approved by the operator;
7. the unreviewed deploy, expired into a final DENY;
8. the execution results reported by all four, the audit trail of one decision and the verified chain;
then a table of every decision. Section 0 opens with the address of the reviewer console (`/console` of
that server) and the reviewer key to sign in with. Nothing leaves 127.0.0.1; the exit code is 0 only if
every step behaved as shown.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aegis_sdk import (
    AegisClient,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    Decision,
    UnknownCapabilityError,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POLICIES = EXAMPLES / "policies"
MCP_POLICIES = EXAMPLES / "mcp_policies.yaml"  # the support desk of step 6 (examples/mcp_tools_server.py)
AGENT = {"id": "support-bot-7", "type": "ai-agent"}
SESSION = {"session_id": "sess_demo_001", "metadata": {"source": "aegis-demo"}}

AGENT_SCOPES = "governance:propose,governance:read,audit:read"
REVIEWER_SCOPES = "governance:review,governance:read"
# The actors the agent key may propose for: this script's agent, the FastAPI app's bot and user, the
# LangChain agent, the MCP proxy's assistant (support-bot-mcp). Any other actor is refused (403 actor_not_allowed).
AGENT_ACTORS = "ai-agent:support-bot*,ai-agent:langchain-support-bot,human:alice"
MCP_ACTOR = "support-bot-mcp"
COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
RESOLVED = re.compile(r"^Decision dec_\w+ was (confirmed with its token|approved by \S+)\. Original decision: ")
OUTCOME_COLORS = {"ALLOW": "32", "DENY": "31", "ESCALATE": "33", "REQUIRE_CONFIRMATION": "36"}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    via: str
    step: str
    decision: Decision


ROWS: list[Row] = []


def heading(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if COLOR else f"\n== {title}")


def paint(outcome: str, width: int = 0) -> str:
    text = f"{outcome:<{width}}"
    return f"\033[{OUTCOME_COLORS.get(outcome, '0')}m{text}\033[0m" if COLOR else text


def show(step: str, decision: Decision, via: str = "SDK") -> Decision:
    ROWS.append(Row(via, step, decision))
    print(f"  {paint(decision.outcome, 21)} risk {decision.risk_score:.2f}  {step}")
    print(textwrap.indent(textwrap.fill(decision.reason, 96), "      "))
    return decision


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"demo failed: {what}")


def print_table() -> None:
    heading("Every decision of this run")
    print(f"  {'via':<9} {'step':<40} {'outcome':<21} {'risk':>4}  reason")
    for row in ROWS:
        d = row.decision
        reason = RESOLVED.sub(r"\1; was ", d.reason)  # "Decision dec_... was approved by x. Original decision: "
        reason = reason if len(reason) <= 64 else reason[:61] + "..."
        print(f"  {row.via:<9} {row.step:<40} {paint(d.outcome, 21)} {d.risk_score:>4.2f}  {reason}")
    counts = Counter(row.decision.outcome for row in ROWS)
    print(f"  {len(ROWS)} decisions: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOME_COLORS))


# ---------------------------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str, db_url: str) -> str:
    """`aegis-server ARGS --db URL`, run in this process (the same code as the command, without paying
    for another interpreter start); returns what it printed."""
    from aegis_server.cli import main as aegis_server

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = aegis_server([*args, "--db", db_url])
    if code != 0:
        raise SystemExit(f"demo failed: aegis-server {' '.join(args)} exited {code}: {err.getvalue()}")
    return out.getvalue()


@contextmanager
def running_server(db_url: str, port: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "aegis_server", "serve",
        "--db", db_url, "--policy", str(POLICIES), "--policy", str(MCP_POLICIES),
        "--host", "127.0.0.1", "--port", str(port),
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
            time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def serving_with_uvicorn(app: Any, port: int) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:port in a thread, lifespan included."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("demo failed: uvicorn did not start the FastAPI app")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # the lifespan's shutdown drains pending execution reports
        thread.join(timeout=15)


def warm_imports(*modules: str) -> threading.Thread:
    """Import modules in a thread while the server starts: on two cores that hides a few seconds."""
    thread = threading.Thread(target=lambda: [importlib.import_module(m) for m in modules], daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------
# The story
# ---------------------------------------------------------------------------------------------


def four_outcomes(aegis: AegisClient) -> Decision:
    heading("1. Plain SDK calls: four outcomes from the example policies")
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
    record = aegis.decisions.report_execution(d.decision_id, status="SUCCESS", duration_ms=8.0)
    print(f"      the query ran; execution reported: {record.status}")
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
    waiting = show(
        "deploy billing 2.4.1",
        aegis.propose(
            actor=AGENT,
            action={"capability": "deploy.production", "parameters": {"service": "billing", "version": "2.4.1"}},
            context=SESSION,
        ),
    )
    expect(
        waiting.outcome == "ESCALATE" and waiting.review is not None and waiting.review.status == "pending",
        "a production deploy escalates",
    )
    print(f"      nobody will review it: its window closes at {waiting.expires_at} (see section 6)")
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
    return waiting


def confirmation_round_trip(aegis: AegisClient) -> None:
    heading("2. Confirmation round trip, then the same token replayed")
    refund = {"capability": "payments.refund", "parameters": {"order_id": "ord_8", "amount": 400, "currency": "EUR"}}
    asked = show("refund 400 EUR", aegis.propose(actor=AGENT, action=refund, context=SESSION))
    expect(asked.outcome == "REQUIRE_CONFIRMATION", "confirmation asked")
    print("  ... the user says yes; the agent resubmits with the token")
    confirmed = show("refund 400 EUR, confirmed", aegis.confirm(asked))
    expect(confirmed.outcome == "ALLOW" and confirmed.parent_decision_id == asked.decision_id, "the token allows it")
    record = aegis.decisions.report_execution(confirmed.decision_id, status="SUCCESS", duration_ms=42.0)
    print(f"      the refund ran; execution reported: {record.status} ({record.audit_ref})")
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


def approved_escalation(aegis: AegisClient, reviewer: AegisClient) -> None:
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


def fastapi_app(endpoint: str, api_key: str, aegis: AegisClient, reviewer: AegisClient) -> None:
    heading("4. A governed FastAPI app (examples/fastapi_app.py), served by uvicorn, called over HTTP")
    import fastapi_app as example

    app = example.create_app(endpoint, api_key)
    with serving_with_uvicorn(app, free_port()) as base, httpx.Client(base_url=base, timeout=10) as http:
        print(f"  serving {base}; the caller is the support bot (Authorization: Bearer bot-token)")
        bot = {"Authorization": "Bearer bot-token"}

        def call(step: str, path: str, body: dict[str, Any], expected: int, **headers: str) -> httpx.Response:
            response = http.post(path, json=body, headers={**bot, **headers})
            detail = response.json().get("detail", {}) if response.status_code >= 400 else {}
            decision_id = response.headers.get("AEGIS-Decision-Id") or detail.get("decision_id")
            code = detail.get("code", "")
            print(f"  POST {path:<22} -> HTTP {response.status_code} {code}")
            expect(response.status_code == expected, f"{step}: HTTP {expected}, got {response.status_code}")
            if decision_id:
                show(step, aegis.decisions.get(decision_id), via="FastAPI")
            return response

        call("POST /queries SELECT", "/queries", {"query": "SELECT id FROM orders LIMIT 5"}, 200)
        call("POST /queries DROP TABLE", "/queries", {"query": "DROP TABLE orders"}, 403)
        asked = call("POST refund 250 EUR", "/orders/A-18/refunds", {"amount": 250, "currency": "EUR"}, 428)
        confirmation = asked.json()["detail"]["decision_id"]
        print("  ... the user consents; the same request again with AEGIS-Confirmation")
        headers = {"AEGIS-Confirmation": confirmation}
        call(
            "POST refund 250 EUR, confirmed", "/orders/A-18/refunds", {"amount": 250, "currency": "EUR"}, 200, **headers
        )
        held = call("POST refund 3,000 EUR", "/orders/A-19/refunds", {"amount": 3000, "currency": "EUR"}, 403)
        escalated = held.json()["detail"]["decision_id"]
        reviewer.decisions.review(escalated, approve=True, note="large customer, approved")
        print("  ... alice-ops approves; the same request again with AEGIS-Confirmation")
        headers = {"AEGIS-Confirmation": escalated}
        call(
            "POST refund 3,000 EUR, approved",
            "/orders/A-19/refunds",
            {"amount": 3000, "currency": "EUR"},
            200,
            **headers,
        )
    print("  uvicorn stopped; the app's lifespan sent its pending execution reports")


def langchain_agent(aegis: AegisClient) -> None:
    heading("5. A LangChain agent (examples/langchain_agent.py) with governed tools, on a scripted model")
    import langchain_agent as example

    steps = example.run_agent(aegis)
    aegis.flush_reports()  # the tools queued their execution reports (sent in the background): send them now
    for step in steps:
        args = ", ".join(f"{k}={v!r}" for k, v in step.tool_call["args"].items())
        call = f"{step.tool_call['name']}({args})"
        print(f"  {call if len(call) <= 96 else call[:93] + '...'}")
        print(f"      {step.outcome}: {step.result if len(step.result) <= 90 else step.result[:87] + '...'}")
    outcomes = sorted(step.outcome.split(" ")[0] for step in steps)
    expect(
        outcomes == ["ALLOW", "ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"],
        f"the agent's tools are allowed, denied, confirmed and escalated, got {outcomes}",
    )
    actor = example.ACTOR["id"]
    capability = {r.decision_id: r.capability for r in aegis.audit.log(actor_id=actor, event_type="decision")}
    for decision in reversed(list(aegis.decisions.list(actor_id=actor))):
        ROWS.append(Row("LangChain", f"tool call: {capability.get(decision.decision_id, '?')}", decision))


def proxy_command() -> list[str]:
    """`aegis-mcp proxy ... -- python examples/mcp_tools_server.py`, the installed console script (or `python -m`)."""
    script = Path(sys.executable).with_name("aegis-mcp")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "aegis_mcp"]
    upstream = [sys.executable, str(EXAMPLES / "mcp_tools_server.py")]
    return [*command, "proxy", "--actor", MCP_ACTOR, "--review-timeout", "30", "--", *upstream]


async def mcp_session(endpoint: str, agent_key: str, reviewer_key: str, log: Path) -> list[tuple[str, str, Any]]:
    """The assistant's calls through the proxy (whose log, on its stderr, goes to `log`); returns (call, what
    the assistant read, the result's governance `_meta`) for each call."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp_types import ElicitResult

    from aegis_sdk import AsyncAegisClient

    answers = iter([True, False])  # the user says yes to the first question, no to the second

    async def the_user(context: Any, params: Any) -> ElicitResult:
        yes = next(answers)
        print(textwrap.indent(params.message, "      the user is asked | "))
        print(f"      the user answers  | {'yes' if yes else 'no'}")
        return ElicitResult(action="accept", content={"confirm": True}) if yes else ElicitResult(action="decline")

    async def the_operator() -> None:
        """Approve the escalated export as soon as it waits in the review queue."""
        async with AsyncAegisClient(endpoint=endpoint, api_key=reviewer_key) as reviewer:
            while True:
                async for pending in reviewer.decisions.list(actor_id=MCP_ACTOR, review_status="pending"):
                    await reviewer.decisions.review(pending.decision_id, approve=True, note="export for the audit")
                    print(f"      operator alice-ops approves {pending.decision_id} in AEGIS")
                    return
                await asyncio.sleep(0.1)

    command = proxy_command()
    print(f"  $ aegis-mcp proxy --actor {MCP_ACTOR} --review-timeout 30 -- python examples/mcp_tools_server.py")
    env = {**os.environ, "AEGIS_ENDPOINT": endpoint, "AEGIS_API_KEY": agent_key}
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(ROOT))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("lookup_order", {"order_id": "A-1001"}),
        ("delete_customer", {"customer_id": "C-42"}),
        ("refund", {"order_id": "A-1002", "amount": 250}),
        ("refund", {"order_id": "A-1002", "amount": 390}),
        ("export_customers", {"segment": "churned"}),
    ]
    seen: list[tuple[str, str, Any]] = []
    with log.open("w", encoding="utf-8") as errlog:
        async with Client(stdio_client(parameters, errlog=errlog), elicitation_callback=the_user) as client:
            tools = await client.list_tools()
            print(f"  the assistant sees the upstream's tools: {', '.join(t.name for t in tools.tools)}")
            for name, arguments in calls:
                shown = f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
                print(f"  tools/call {shown}")
                operator = asyncio.create_task(the_operator()) if name == "export_customers" else None
                progress: list[str] = []

                async def on_progress(
                    done: float, total: float | None, message: str | None, sink: list[str] = progress
                ) -> None:
                    sink.append(message or "")

                result = await client.call_tool(name, arguments, progress_callback=on_progress)
                if operator is not None:
                    await operator
                if progress:
                    print(f"      {len(progress)} progress notification(s) while it waited: {progress[0]!r}")
                text = " ".join(getattr(block, "text", "") for block in result.content)
                text = " ".join(text.split())  # the order comes back as indented JSON
                print(textwrap.indent(textwrap.fill(("isError: " if result.is_error else "") + text, 96), "      > "))
                seen.append((shown, text, (result.meta or {}).get("io.aegis/governance", {})))
    return seen


def mcp_proxy(endpoint: str, agent_key: str, reviewer_key: str, aegis: AegisClient) -> None:
    heading("6. An MCP server behind `aegis-mcp proxy`, called by an MCP client over stdio")
    log = Path(tempfile.gettempdir()) / f"aegis-demo-mcp-proxy-{os.getpid()}.log"
    try:
        seen = asyncio.run(mcp_session(endpoint, agent_key, reviewer_key, log))
        lines = log.read_text(encoding="utf-8").splitlines()
    finally:
        log.unlink(missing_ok=True)
    leaked = [
        value for value in ("A-1001", "C-42", "A-1002", "churned", agent_key) if any(value in line for line in lines)
    ]
    expect(not leaked, "the proxy's log holds no argument value and no key")
    print(f"  the proxy logged {len(lines)} lines on its stderr (ids, outcomes; no argument value, no key), e.g.:")
    for line in lines[:2]:
        print(f"      {line}")
    outcomes = []
    for call, _text, meta in seen:
        decision_id = meta.get("decision_id")
        expect(bool(decision_id), f"{call}: the result names its AEGIS decision")
        decision = aegis.decisions.get(decision_id)
        ROWS.append(Row("MCP", f"tools/call {call.split('(')[0]}", decision))
        outcomes.append(decision.outcome)
    texts = [text for _call, text, _meta in seen]
    expect("A-1001" in texts[0], "lookup_order is allowed and forwarded")
    expect("denied" in texts[1] and "deleted" not in texts[1], "delete_customer is denied; the tool never ran")
    expect(texts[2].startswith("refunded 250.00"), "the user confirmed the 250 refund: it ran")
    expect("declined" in texts[3] and "refunded" not in texts[3], "the user declined the 390 refund: it did not run")
    expect(texts[4].startswith("exported"), "the operator approved the export: it ran")
    print(f"  the decisions behind those results: {', '.join(outcomes)}")


def expired_escalation(aegis: AegisClient, waiting: Decision) -> None:
    heading("7. The escalation nobody reviewed: expired into a final DENY")
    final = show("deploy billing 2.4.1, review window over", aegis.wait_for_review(waiting, timeout=15))
    expect(final.outcome == "DENY" and final.review is not None and final.review.status == "expired", "expiry denies")


def audit(aegis: AegisClient) -> None:
    heading("8. Execution results, the audit trail of one decision, the whole chain verified")
    executions = list(aegis.audit.log(event_type="execution", limit=200))
    by_actor = Counter(record.actor_id for record in executions)
    print(f"  execution results reported: {len(executions)} ({', '.join(f'{n} by {a}' for a, n in by_actor.items())})")
    expect(
        len(by_actor) >= 4, "the SDK, the FastAPI app, the LangChain agent and the MCP proxy each reported executions"
    )
    confirmed = next(row.decision for row in reversed(ROWS) if row.decision.parent_decision_id)
    trail = aegis.audit.trail(confirmed.decision_id)
    print(f"  trail of {confirmed.decision_id}:")
    for record in trail.records:
        hashes = f"hash {record.hash[:16]}…  prev {record.previous_hash[:16]}…"
        print(f"    #{record.sequence:<4} {record.event_type:<14} {hashes}")
    records = list(aegis.audit.log(limit=200))
    verification = aegis.audit.verify()
    print(
        f"  audit records: {len(records)}; chain valid: {verification.valid} ({verification.records_checked} checked)"
    )
    expect(verification.valid and verification.records_checked == len(records), "the chain verifies")


def main() -> int:
    started = time.monotonic()
    sys.path.insert(0, str(EXAMPLES))
    server_cli = warm_imports("aegis_server.cli")
    adapters = warm_imports("uvicorn", "fastapi_app", "langchain_agent")
    with tempfile.TemporaryDirectory(prefix="aegis-demo-") as folder:
        db_url = f"sqlite+aiosqlite:///{Path(folder) / 'aegis.db'}"
        heading("0. aegis-server on SQLite with the example policies; two API keys made with its CLI")
        with running_server(db_url, free_port()) as endpoint:
            server_cli.join()
            agent_key = cli(
                "keys", "create", "--name", "support-bot", "--scopes", AGENT_SCOPES, "--actors", AGENT_ACTORS,
                db_url=db_url,
            ).strip()  # fmt: skip
            reviewer_key = cli("keys", "create", "--name", "alice-ops", "--scopes", REVIEWER_SCOPES, db_url=db_url)
            print(
                f"  Reviewer console (while the demo runs): {endpoint}/console — sign in with the reviewer key "
                f"{reviewer_key.strip()} (alice-ops, made for this run)"
            )
            print(f"  serving {endpoint} (database {db_url})")
            print(f"  aegis-server keys create: support-bot ({AGENT_SCOPES}; actors {AGENT_ACTORS}),")
            print(f"                            alice-ops ({REVIEWER_SCOPES})")
            with (
                AegisClient(endpoint=endpoint, api_key=agent_key) as aegis,
                AegisClient(endpoint=endpoint, api_key=reviewer_key.strip()) as reviewer,
            ):
                waiting = four_outcomes(aegis)
                confirmation_round_trip(aegis)
                approved_escalation(aegis, reviewer)
                adapters.join()
                fastapi_app(endpoint, agent_key, aegis, reviewer)
                langchain_agent(aegis)
                mcp_proxy(endpoint, agent_key, reviewer_key.strip(), aegis)
                expired_escalation(aegis, waiting)
                audit(aegis)
        print_table()
        verified = cli("audit", "verify", db_url=db_url)
        print(f"\n  independently, from the database: aegis-server audit verify -> {verified.strip()}")
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
