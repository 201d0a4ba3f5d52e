"""Soak load: a steady rate of proposals from many SDK clients against a real `aegis-server serve` process,
for a fixed time, with the audit committed before every answer. Reports errors (must be 0), latency
percentiles, the rate actually held, the server's resident memory at start and end, and checks the audit
afterwards (the chain verifies, one decision per answered proposal).

    python bench/load_soak.py                          # SQLite file, 200 proposals/s, 64 clients, 60 s
    python bench/load_soak.py --db postgresql+asyncpg://postgres@127.0.0.1:5432/test --rate 400
    python bench/load_soak.py --duration 10 --json result.json

Open loop: each client sends on a fixed schedule (rate / clients per second), whatever the latency, so a
slow server shows up as latency and schedule lag instead of silently lowering the rate. Exit code 1 when
any request failed or the audit check did not pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_server import ServedProcess, machine_summary

from aegis_sdk import AegisError, AsyncAegisClient

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "examples" / "policies"
QUERIES = [
    "SELECT id, email FROM users WHERE id = {n}",
    "SELECT count(*) FROM orders WHERE customer_id = {n}",
    "INSERT INTO audit_notes (note) VALUES ('soak {n}')",
]


def _proposal(n: int) -> dict[str, Any]:
    return {
        "actor": {"id": f"agent-{n % 50}", "type": "ai-agent"},
        "action": {
            "capability": "database.query",
            "parameters": {"query": QUERIES[n % len(QUERIES)].format(n=n), "database": "development"},
        },
        "context": {"session_id": f"soak-{n % 200}", "metadata": {"n": n}},
    }


async def _client(
    endpoint: str,
    key: str,
    index: int,
    clients: int,
    rate: float,
    start: float,
    stop: float,
    warmup_until: float,
    out: dict[str, Any],
) -> None:
    interval = clients / rate
    next_at = start + interval * index / clients  # spread the clients over one interval
    n = index
    async with AsyncAegisClient(endpoint=endpoint, api_key=key, timeout=30, retries=0) as client:
        while next_at < stop:
            now = time.perf_counter()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            sent = time.perf_counter()
            out["lag"].append(sent - next_at)
            try:
                decision = await client.propose(**_proposal(n), idempotency_key=uuid.uuid4().hex)
            except AegisError as exc:
                out["errors"].append(f"{type(exc).__name__}: {exc}")
            else:
                if sent >= warmup_until:
                    out["latency"].append(time.perf_counter() - sent)
                out["outcomes"][decision.outcome] = out["outcomes"].get(decision.outcome, 0) + 1
                out["answered"] += 1
            n += clients
            next_at += interval


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(args: argparse.Namespace, server: ServedProcess, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": [], "lag": [], "errors": [], "outcomes": {}, "answered": 0}
    start = time.perf_counter() + 0.5
    stop = start + args.warmup + args.duration
    warmup_until = start + args.warmup
    rss_start: list[int] = []

    async def sample_start() -> None:
        await asyncio.sleep(max(0.0, warmup_until - time.perf_counter()))
        rss_start.append(server.rss_kib())

    sampler = asyncio.create_task(sample_start())
    await asyncio.gather(
        *(
            _client(server.endpoint, key, i, args.clients, args.rate, start, stop, warmup_until, out)
            for i in range(args.clients)
        )
    )
    await sampler
    elapsed = time.perf_counter() - start
    rss_end = server.rss_kib()
    latency = out["latency"]
    return {
        "requests": out["answered"] + len(out["errors"]),
        "answered": out["answered"],
        "errors": len(out["errors"]),
        "first_errors": out["errors"][:5],
        "outcomes": out["outcomes"],
        "target_rate": args.rate,
        "achieved_rate": round((out["answered"] + len(out["errors"])) / elapsed, 1),
        "measured_seconds": args.duration,
        "latency_ms": {
            "p50": round(_percentile(latency, 0.50) * 1000, 2),
            "p90": round(_percentile(latency, 0.90) * 1000, 2),
            "p99": round(_percentile(latency, 0.99) * 1000, 2),
            "max": round(max(latency) * 1000, 2) if latency else None,
            "mean": round(statistics.fmean(latency) * 1000, 2) if latency else None,
        },
        "schedule_lag_ms_p99": round(_percentile(out["lag"], 0.99) * 1000, 2),
        "server_rss_mib": {
            "start": round(rss_start[0] / 1024, 1) if rss_start else None,
            "end": round(rss_end / 1024, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--rate", type=float, default=200.0, help="proposals per second, all clients together")
    parser.add_argument("--clients", type=int, default=64, help="concurrent SDK clients (one connection each)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aegis-soak-") as folder:
        db_url = args.db or f"sqlite+aiosqlite:///{Path(folder) / 'aegis.db'}"
        with ServedProcess(db_url, [POLICIES], Path(folder) / "server.log") as server:
            key = server.create_key("soak", ["governance:propose", "governance:read"])
            result = asyncio.run(_run(args, server, key))
            audit = server.audit_summary()
        result["audit"] = audit
        result["database"] = "postgresql" if db_url.startswith("postgres") else "sqlite"
        result["clients"] = args.clients
        result["machine"] = machine_summary()
        result["python"] = platform.python_version()
        result["command"] = "python bench/load_soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = (
        result["errors"] == 0
        and audit["chain_valid"]
        and audit["decisions"] >= result["answered"]
        and audit["duplicate_keys"] == 0
    )
    if not ok:
        print("FAILED: errors, or the audit does not hold every answered decision", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("AEGIS_LOG_LEVEL", "warning")
    raise SystemExit(main())
