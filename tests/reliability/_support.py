"""Real server processes for the reliability and security suites: `python -m aegis_server serve` on a
loopback port, keys made with the CLI, a fresh PostgreSQL database per use, and direct reads of the
store to check what the clients were told against what was recorded.

Everything is bounded: every wait has a deadline and every process is stopped (SIGKILL if need be).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from aegis_server.store import Store, default_audit_dir
from aegis_server.store.schema import audit_records, decisions, idempotency_keys

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
POLICY = HERE / "policies" / "reliability.yaml"
READY_TIMEOUT = 60.0
_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def env_int(name: str, default: int) -> int:
    """A size knob of a suite: small by default (CI), larger when asked (`AEGIS_RELIABILITY_SCALE=...`)."""
    value = os.environ.get(name)
    return int(value) if value else default


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in a worker thread (works from sync and async tests alike)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'aegis.db'}"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); skips when the server is unreachable, unless
    AEGIS_TEST_POSTGRES=required (CI), where it fails."""
    admin = make_url(os.environ.get("AEGIS_TEST_POSTGRES_URL", _ADMIN_URL))
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"aegis_rel_{secrets.token_hex(6)}"

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        run_async(lambda: admin_sql(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        message = f"PostgreSQL unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("AEGIS_TEST_POSTGRES") == "required":
            pytest.fail(message + " (AEGIS_TEST_POSTGRES=required)")
        pytest.skip(message)
    url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        run_async(lambda: admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        directory = default_audit_dir(url)  # the audit key file and checkpoints made for it
        if directory is not None and directory.name.endswith(name):
            shutil.rmtree(directory, ignore_errors=True)


def cli(db_url: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """`python -m aegis_server <args> --db URL`; returns stdout, fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "aegis_server", *args, "--db", db_url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"aegis-server {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def create_key(db_url: str, name: str, scopes: Sequence[str]) -> str:
    """A new API key in the database (what `aegis-server keys create` does, without its start-up cost)."""

    async def create() -> str:
        store = await Store.open(db_url, migrate=False)
        try:
            key, _ = await store.create_api_key(name, scopes)
            return key
        finally:
            await store.close()

    return run_async(create)


class ServerProcess:
    """One `aegis-server serve` process on a fixed loopback port; `start()` again after `kill()` restarts
    it on the same database and port. Its output (stdout and stderr) is appended to `log_path`."""

    def __init__(
        self,
        db_url: str,
        log_path: Path,
        *,
        policy_paths: Sequence[Path] = (POLICY,),
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.db_url = db_url
        self.log_path = log_path
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AEGIS_RATE_LIMIT_PER_MINUTE": "0",
            "AEGIS_POLICY_REFRESH_INTERVAL_SECONDS": "1",
            **(env or {}),
        }
        self.command = [sys.executable, "-m", "aegis_server", "serve", "--db", db_url]
        for path in policy_paths:
            self.command += ["--policy", str(path)]
        self.command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", log_level]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServerProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.log_path.parent
            )
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"aegis-server exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"aegis-server not ready in {READY_TIMEOUT:g} s:\n{self.logs()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush — the crash the store must survive."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self) -> int:
        """Resident memory of the server process (Linux /proc), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# What the store holds
# ---------------------------------------------------------------------------------------------


class StoreSnapshot:
    """The decisions, audit records and idempotency keys of a database, read directly, plus the chain check."""

    def __init__(self, db_url: str) -> None:
        async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], Any]:
            store = await Store.open(db_url, migrate=False)
            try:
                async with store.engine.connect() as conn:
                    rows = [dict(r._mapping) for r in (await conn.execute(sa.select(decisions))).all()]
                    audit = [
                        dict(r._mapping)
                        for r in (await conn.execute(sa.select(audit_records).order_by(audit_records.c.sequence)))
                    ]
                    keys = [dict(r._mapping) for r in (await conn.execute(sa.select(idempotency_keys))).all()]
                return rows, audit, keys, await store.verify_chain()
            finally:
                await store.close()

        self.decisions, self.audit, self.idempotency, self.verification = run_async(read)
        self.by_id = {row["decision_id"]: row for row in self.decisions}
        self.audit_by_ref = {row["audit_ref"]: row for row in self.audit}

    def records(self, event_type: str) -> list[dict[str, Any]]:
        return [row for row in self.audit if row["event_type"] == event_type]

    def assert_consistent(self) -> None:
        """The chain verifies, and no decision is half-written: each decision row has exactly one
        "proposal" and one "decision" record, and each "decision" record has its row."""
        assert self.verification.valid, self.verification
        assert self.verification.records_checked == len(self.audit)
        proposals: dict[str, int] = {}
        decided: dict[str, int] = {}
        for row in self.audit:
            if row["event_type"] == "proposal":
                proposals[row["decision_id"]] = proposals.get(row["decision_id"], 0) + 1
            elif row["event_type"] == "decision":
                decided[row["decision_id"]] = decided.get(row["decision_id"], 0) + 1
                assert row["decision_id"] in self.by_id, f"audit record without its decision: {row['audit_ref']}"
        for decision_id, row in self.by_id.items():
            assert proposals.get(decision_id) == 1, f"{decision_id}: {proposals.get(decision_id)} proposal records"
            assert decided.get(decision_id) == 1, f"{decision_id}: {decided.get(decision_id)} decision records"
            assert self.audit_by_ref[row["audit_ref"]]["decision_id"] == decision_id

    def assert_received(self, decision_id: str, audit_ref: str, outcome: str) -> None:
        """A decision a client was answered is in the store and in the audit log, as answered."""
        assert decision_id in self.by_id, f"a client was answered {decision_id}, which the store lost"
        record = self.audit_by_ref.get(audit_ref)
        assert record is not None, f"{decision_id}: audit record {audit_ref} missing"
        assert (record["event_type"], record["decision_id"], record["outcome"]) == ("decision", decision_id, outcome)

    def decisions_per_marker(self) -> dict[str, int]:
        """How many proposals were recorded per `context.metadata.marker` (one per logical proposal)."""
        counts: dict[str, int] = {}
        for row in self.records("proposal"):
            marker = (row["payload"].get("context") or {}).get("metadata", {}).get("marker")
            if marker is not None:
                counts[marker] = counts.get(marker, 0) + 1
        return counts
