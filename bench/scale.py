"""Scale: audit queries over a large audit log, and the server's memory with it; then the memory of one
server through 1,000,000 decisions.

The records are written straight into the store's tables (a fresh SQLite database migrated by the
server's own code) in batches, each with a valid chain hash (`link_hash`), so `audit verify` holds —
decisions through the API would take hours at this size. Then `aegis-server serve` opens it and the
benchmark times `GET /api/v1/audit/log` (first page; filtered by actor; filtered by decision) and
`GET /api/v1/audit/log/{id}` (the trail), and reads the server's resident memory. Size: `AEGIS_BENCH_AUDIT_RECORDS`
(default 1,000,000; `--quick` 100,000).

Memory through decisions: a fresh `aegis-server serve` on SQLite answers `POST /propose` at 64 connections
(wrk, else the Python generator) in chunks of up to 20 s, its resident memory read after each, until
1,000,000 decisions (`AEGIS_BENCH_MEMORY_DECISIONS`; `--quick` 100,000) or until the time the run has
left of its ten minutes: the result says how many it reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegis_server.store import Store
from aegis_server.store.chain import GENESIS_HASH, link_hash

from . import loadgen
from ._common import rss_mib, summary_us
from .rules import server_proposal
from .server import PROPOSE, aegis_server

_MEMORY_CHUNK_SECONDS = 20.0
_MEMORY_CONNECTIONS = 64


def _fill(db_path: Path, records: int) -> float:
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{db_path}"))
    start = time.perf_counter()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now = datetime(2025, 1, 6, 12, 0, tzinfo=timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    created = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    previous = GENESIS_HASH
    batch: list[tuple[Any, ...]] = []
    sql = (
        "INSERT INTO audit_records (sequence, audit_ref, event_type, decision_id, actor_id, capability, outcome, "
        "session_id, timestamp, created_at, payload, previous_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for seq in range(1, records + 1):
        decision_id = f"dec_{(seq + 1) // 2:032x}"
        proposal = seq % 2 == 1
        fields = {
            "audit_ref": f"aud_{uuid.uuid4().hex}",
            "sequence": seq,
            "event_type": "proposal" if proposal else "decision",
            "decision_id": decision_id,
            "actor_id": f"agent-{seq % 1000}",
            "capability": "database.query",
            "outcome": None if proposal else "ALLOW",
            "session_id": f"s-{seq % 5000}",
            "timestamp": stamp,
            "payload": {"params_hash": "0" * 64, "n": seq},
            "previous_hash": previous,
        }
        digest = link_hash(fields)
        batch.append(
            (
                seq,
                fields["audit_ref"],
                fields["event_type"],
                decision_id,
                fields["actor_id"],
                fields["capability"],
                fields["outcome"],
                fields["session_id"],
                stamp,
                created,
                json.dumps(fields["payload"], separators=(",", ":")),
                previous,
                digest,
            )
        )
        previous = digest
        if len(batch) >= 20_000:
            conn.executemany(sql, batch)
            conn.commit()
            batch.clear()
    if batch:
        conn.executemany(sql, batch)
        conn.commit()
    conn.close()
    return time.perf_counter() - start


async def _migrate(url: str) -> None:
    store = await Store.open(url)
    await store.close()


def _timed_get(url: str, key: str, n: int) -> dict[str, Any]:
    samples = []
    for _ in range(n):
        req = urllib.request.Request(url, headers={"Authorization": key})
        t0 = time.perf_counter_ns()
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
        samples.append(time.perf_counter_ns() - t0)
    stats = summary_us(samples)
    return {"p50_ms": round(stats["p50_us"] / 1000, 2), "p99_ms": round(stats["p99_us"] / 1000, 2), "n": n}


def _load(url: str, body: bytes, auth: str, seconds: float) -> int:
    """Decisions answered (2xx) in `seconds` of closed-loop load."""
    if loadgen.have_wrk():
        result = loadgen.run_wrk(url, body, auth, _MEMORY_CONNECTIONS, seconds)
    else:
        result = loadgen.run_python(url, body, auth, connections=_MEMORY_CONNECTIONS, duration=seconds)
    return int(result["requests"]) - int(result["non_2xx"])


def memory_through_decisions(quick: bool = False, deadline: float | None = None) -> dict[str, Any]:
    """The server's resident memory as it answers up to 1,000,000 decisions (or until `deadline`, a
    `time.monotonic()` value). Each sample: (decisions answered so far, RSS in MiB)."""
    target = int(os.environ.get("AEGIS_BENCH_MEMORY_DECISIONS", "100000" if quick else "1000000"))
    body = json.dumps(server_proposal()).encode()
    with tempfile.TemporaryDirectory(prefix="aegis-bench-memory-") as tmpdir:
        tmp = Path(tmpdir)
        with aegis_server(f"sqlite+aiosqlite:///{tmp / 'aegis.db'}", tmp) as (base, auth, proc):
            answered = _load(base + PROPOSE, body, auth, 2.0)  # warm-up: imports, caches, first pages
            samples = [(answered, rss_mib(proc.pid))]
            started = time.monotonic()
            while answered < target:
                left = (deadline - time.monotonic()) if deadline is not None else _MEMORY_CHUNK_SECONDS
                if left < 2.0:
                    break
                answered += _load(base + PROPOSE, body, auth, min(_MEMORY_CHUNK_SECONDS, left))
                samples.append((answered, rss_mib(proc.pid)))
            seconds = time.monotonic() - started
    first, last = samples[0], samples[-1]
    growth = (last[1] - first[1]) / ((last[0] - first[0]) / 100_000) if last[0] > first[0] else 0.0
    return {
        "target_decisions": target,
        "decisions": answered,
        "reached_target": answered >= target,
        "seconds": round(seconds, 1),
        "rss_mib": samples,
        "rss_growth_mib_per_100k_decisions": round(growth, 2),
    }


def run(quick: bool = False, deadline: float | None = None) -> dict[str, Any]:
    records = int(os.environ.get("AEGIS_BENCH_AUDIT_RECORDS", "100000" if quick else "1000000"))
    with tempfile.TemporaryDirectory(prefix="aegis-bench-scale-") as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "aegis.db"
        fill_s = _fill(db, records)
        size_mib = round(db.stat().st_size / 2**20, 1)
        url = f"sqlite+aiosqlite:///{db}"
        with aegis_server(url, tmp) as (base, auth, proc):
            rss_start = rss_mib(proc.pid)
            mid = f"dec_{records // 4:032x}"
            queries = {
                "audit_log_first_page": f"{base}/api/v1/audit/log?limit=100",
                "audit_log_by_actor": f"{base}/api/v1/audit/log?actor_id=agent-7&limit=100",
                "audit_log_by_decision": f"{base}/api/v1/audit/log?decision_id={mid}",
                "audit_trail": f"{base}/api/v1/audit/log/{mid}",
            }
            results = {name: _timed_get(u, auth, 20 if quick else 50) for name, u in queries.items()}
            rss_after = rss_mib(proc.pid)
    return {
        "audit_records": records,
        "fill_s": round(fill_s, 1),
        "database_mib": size_mib,
        "queries": results,
        "server_rss_mib": {"at_start": rss_start, "after_queries": rss_after},
        "memory_through_decisions": memory_through_decisions(quick, deadline),
    }
