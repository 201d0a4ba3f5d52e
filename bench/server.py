"""Server: `POST /api/v1/governance/propose` on `aegis-server serve`, every decision durably audited.

For each store (SQLite file; PostgreSQL when reachable) the server runs exactly as `aegis-server serve`
starts it (one process, uvicorn with uvloop and httptools, the example policies), with the per-key rate
limit switched off (`AEGIS_RATE_LIMIT_PER_MINUTE=0`; the default of 6,000/min per key would cap one load
client at 100 decisions/s). The load comes from a separate process: wrk at fixed concurrency where it is
installed, the Python open-loop generator at fixed offered rates. After the load, the audit chain is
verified and the stored decisions are counted against the answered requests.

Baseline of the same run: `bench/baseline_app.py` — a bare FastAPI endpoint of the same request and
response shape, on the same uvicorn settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import loadgen
from ._common import POLICIES, ROOT, cpu_seconds, free_port, ratio, rss_mib, server_process
from .rules import server_proposal

PG_ADMIN_URL = os.environ.get("AEGIS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_BENCH_DB = "aegis_bench"
PROPOSE = "/api/v1/governance/propose"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def checkpoint_env(db_url: str, tmp: Path) -> dict[str, str]:
    """The audit checkpoint directory of one benchmark database, inside the run's temporary directory: a
    PostgreSQL database is dropped and made again by every run, and the checkpoints of the last run (by
    default under ~/.aegis/audit/) would make the server refuse the new, shorter chain as a cut one."""
    name = hashlib.sha256(db_url.encode()).hexdigest()[:12]
    return {"AEGIS_AUDIT_CHECKPOINT_DIR": str(tmp / f"audit-{name}")}


def _cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [_bin("aegis-server"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **env},
    )
    if out.returncode != 0:
        raise RuntimeError(f"aegis-server {args[0]} failed: {out.stderr.strip()[-400:]}")
    return out.stdout.strip()


async def _reset_postgres() -> str | None:
    """A fresh `aegis_bench` database on the local PostgreSQL (None when it cannot be reached)."""
    try:
        import asyncpg
    except ImportError:
        return None
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
        return None
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{PG_BENCH_DB}"


def postgres_url() -> str | None:
    return asyncio.run(_reset_postgres())


@contextlib.contextmanager
def aegis_server(db_url: str, tmp: Path, **env: str) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """`aegis-server serve` on a fresh port: yields (base URL, Authorization header, process)."""
    checkpoints = checkpoint_env(db_url, tmp)
    key = _cli(
        "keys",
        "create",
        "--db",
        db_url,
        "--name",
        "bench",
        "--scopes",
        "governance:propose,audit:read",
        "--actors",
        "*",
        env=checkpoints,
    )
    port = free_port()
    argv = [_bin("aegis-server"), "serve", "--db", db_url, "--policy", str(POLICIES), "--port", str(port)]
    full_env = {"AEGIS_RATE_LIMIT_PER_MINUTE": "0", **checkpoints, **env}
    base = f"http://127.0.0.1:{port}"
    with server_process(argv, base + "/api/v1/health", env=full_env, log=tmp / f"serve-{port}.log") as proc:
        yield base, f"Bearer {key}", proc


@contextlib.contextmanager
def baseline_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_app:app",
        "--port",
        str(port),
        "--no-access-log",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    base = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": str(ROOT)}
    with server_process(argv, base + "/api/v1/health", env=env, log=tmp / "baseline.log") as proc:
        yield base, proc


def _warm(url: str, body: bytes, auth: str | None) -> None:
    loadgen.run_python(url, body, auth, connections=4, duration=1.0)


def _closed_point(
    url: str, body: bytes, auth: str | None, connections: int, duration: float, pid: int
) -> dict[str, Any]:
    """One fixed-concurrency point, with the server's CPU time per answered request (read from /proc
    around it): steadier than requests/s on a machine whose speed drifts, and comparable across servers."""
    before = cpu_seconds(pid)
    result = loadgen.closed_loop(url, body, auth, connections, duration)
    answered = int(result["requests"]) - int(result["non_2xx"])
    if answered > 0:
        result["server_cpu_us_per_request"] = round((cpu_seconds(pid) - before) / answered * 1e6, 1)
    return result


def _measure(
    url: str, body: bytes, auth: str | None, concurrency: list[int], rates: list[int], duration: float, pid: int
) -> dict[str, Any]:
    _warm(url, body, auth)
    closed = {str(c): _closed_point(url, body, auth, c, duration, pid) for c in concurrency}
    opened = {str(r): loadgen.run_python(url, body, auth, connections=64, duration=duration, rate=r) for r in rates}
    return {"concurrency": closed, "offered_rate": opened}


def _verify(db_url: str, tmp: Path) -> dict[str, Any]:
    try:
        message = _cli("audit", "verify", "--db", db_url, env=checkpoint_env(db_url, tmp))
    except RuntimeError as exc:
        return {"ok": False, "message": str(exc)[:200]}
    return {"ok": True, "message": message[:200]}


def _answered(results: dict[str, Any]) -> int:
    total = 0
    for group in ("concurrency", "offered_rate"):
        for r in results[group].values():
            total += int(r["requests"]) - int(r["non_2xx"])
    return total


async def _count_decisions(db_url: str) -> int:
    from sqlalchemy import text

    from aegis_server.store.engine import create_engine

    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM decisions"))).scalar_one())
    finally:
        await engine.dispose()


def run_store(
    db_url: str, label: str, tmp: Path, concurrency: list[int], rates: list[int], duration: float, **env: str
) -> dict[str, Any]:
    body = json.dumps(server_proposal()).encode()
    with aegis_server(db_url, tmp, **env) as (base, auth, proc):
        results = _measure(base + PROPOSE, body, auth, concurrency, rates, duration, proc.pid)
        results["rss_mib_after"] = rss_mib(proc.pid)
    stored = asyncio.run(_count_decisions(db_url))
    results["store"] = label
    results["decisions_stored"] = stored
    results["answered_2xx_measured"] = _answered(results)
    results["chain"] = _verify(db_url, tmp)
    return results


def run(quick: bool = False, postgres: bool = True) -> dict[str, Any]:
    duration = 3.0 if quick else 5.0
    concurrency = [1, 32] if quick else [1, 8, 32, 64]
    rates = [500, 1000] if quick else [250, 500, 1000, 2000]
    body = json.dumps(server_proposal()).encode()
    out: dict[str, Any] = {
        "duration_s_per_point": duration,
        "load_generator": {
            "fixed_concurrency": "wrk (C, 1 thread)" if loadgen.have_wrk() else "python (uvloop) closed loop",
            "fixed_rate": "python (uvloop) open loop, 64 connections, latency from the scheduled send",
        },
        "serving": "aegis-server serve: uvicorn, 1 worker, uvloop + httptools; AEGIS_RATE_LIMIT_PER_MINUTE=0",
    }
    with tempfile.TemporaryDirectory(prefix="aegis-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with baseline_server(tmp) as (base, proc):
            out["baseline"] = _measure(base + PROPOSE, body, None, concurrency, rates, duration, proc.pid)
        sqlite_url = f"sqlite+aiosqlite:///{tmp / 'aegis.db'}"
        out["sqlite"] = run_store(sqlite_url, "sqlite", tmp, concurrency, rates, duration)
        pg = postgres_url() if postgres else None
        if pg is None:
            out["postgres"] = {"skipped": f"PostgreSQL not reachable at {PG_ADMIN_URL}"}
        else:
            out["postgres"] = run_store(pg, "postgresql", tmp, concurrency, rates, duration)
    base32 = out["baseline"]["concurrency"].get("32", {}).get("rps", 0.0)
    base_cpu32 = out["baseline"]["concurrency"].get("32", {}).get("server_cpu_us_per_request")
    for store in ("sqlite", "postgres"):
        data = out[store]
        if "concurrency" in data:
            rps32 = data["concurrency"].get("32", {}).get("rps", 0.0)
            data["ratio_rps32_vs_baseline"] = ratio(rps32, base32)
            cpu32 = data["concurrency"].get("32", {}).get("server_cpu_us_per_request")
            if cpu32 and base_cpu32:
                data["ratio_cpu_per_request32_baseline_over_aegis"] = ratio(base_cpu32, cpu32)
    sq = out["sqlite"]
    pg = out["postgres"]
    out["targets"] = {  # issue 20's
        "sqlite_rps32>=4000": sq["concurrency"].get("32", {}).get("rps", 0) >= 4000,
        "sqlite_rps32>=0.6x_baseline": sq.get("ratio_rps32_vs_baseline", 0) >= 0.6,
        "sqlite_p99_at_1000rps<=5ms": sq["offered_rate"].get("1000", {}).get("p99_ms", 1e9) <= 5,
    }
    if "concurrency" in pg:
        out["targets"]["postgres_rps32>=0.5x_baseline"] = pg.get("ratio_rps32_vs_baseline", 0) >= 0.5
    return out


if __name__ == "__main__":
    started = time.time()
    print(json.dumps(run(quick="--quick" in sys.argv, postgres="--no-postgres" not in sys.argv), indent=1))
    print(f"took {time.time() - started:.0f} s", file=sys.stderr)
