"""The server side of `load_soak.py`: one `aegis-server serve` process on a free loopback port, its
memory, a key, and the audit check afterwards, plus a one-line description of the machine."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from aegis_server.store import Store
from aegis_server.store.schema import decisions, idempotency_keys


def machine_summary() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) // (1024 * 1024)} GiB RAM"
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}"


class ServedProcess:
    """`python -m aegis_server serve` with rate limiting off (the load is the point), stopped on exit."""

    def __init__(self, db_url: str, policy_paths: Sequence[Path], log_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url
        command = [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--log-level", "warning"]
        for path in policy_paths:
            command += ["--policy", str(path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._command = command
        self._log_path = log_path
        self._env = {**os.environ, "AEGIS_RATE_LIMIT_PER_MINUTE": "0"}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServedProcess:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT, env=self._env)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"aegis-server exited: {self._log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("aegis-server was not ready within 60 s")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        async def create() -> str:
            store = await Store.open(self.db_url, migrate=False)
            try:
                key, _ = await store.create_api_key(name, scopes)
                return key
            finally:
                await store.close()

        return asyncio.run(create())

    def audit_summary(self) -> dict[str, Any]:
        """The chain check and the counts that prove one decision per answered proposal."""

        async def summary() -> dict[str, Any]:
            store = await Store.open(self.db_url, migrate=False)
            try:
                verification = await store.verify_chain()
                async with store.engine.connect() as conn:
                    count = await conn.scalar(sa.select(sa.func.count()).select_from(decisions))
                    keys = await conn.scalar(sa.select(sa.func.count()).select_from(idempotency_keys))
                return {
                    "chain_valid": verification.valid,
                    "records_checked": verification.records_checked,
                    "decisions": int(count or 0),
                    "idempotency_keys": int(keys or 0),
                    "duplicate_keys": int(count or 0) - int(keys or 0),
                }
            finally:
                await store.close()

        return asyncio.run(summary())
