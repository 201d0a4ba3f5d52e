"""The issue's proof: `aegis-server serve` with the file sink, SIGKILLed while decisions stream in,
restarted, driven again and stopped gracefully. The file then holds sequences 1..N, contiguous, each
previous_hash the prior line's hash, N the audit head, and `aegis-server audit verify` agrees."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from aegis_server.cli import main
from aegis_server.cli.command_support import with_store
from aegis_server.store import Store

from .support import POLICIES, assert_chain, proposal, read_lines

pytestmark = pytest.mark.slow
T = TypeVar("T")


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(db_url: str, port: int, log: Path, export: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AEGIS_RATE_LIMIT_PER_MINUTE": "0",
        "AEGIS_AUDIT_EXPORT_FILE": str(export),
        "AEGIS_AUDIT_EXPORT_BATCH": "3",  # many small batches: the kill lands between and inside them
        "AEGIS_AUDIT_EXPORT_LEASE_SECONDS": "1",  # the killed process's lease passes quickly
        "AEGIS_AUDIT_EXPORT_POLL_INTERVAL_SECONDS": "0.05",
    }
    command = [
        sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(POLICIES),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "not ready in 60 s"
        time.sleep(0.05)


def _drive(port: int, key: str, stop: threading.Event, decided: list[int]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
        while not stop.is_set():
            try:
                if client.post("/api/v1/governance/propose", json=proposal()).status_code == 200:
                    decided.append(1)
            except httpx.TransportError:
                return  # the server is gone


def test_export_file_is_complete_and_ordered_after_sigkill_and_restart(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    export = tmp_path / "export" / "audit.jsonl"
    log = tmp_path / "server.log"

    async def make_key(store: Store) -> str:
        key, _ = await store.create_api_key("agent", ["admin"], ["*"])
        return str(key)

    key = _run_async(lambda: with_store(db_url, make_key, migrate=True, writes=True))
    port = _free_port()
    process = _serve(db_url, port, log, export)
    try:
        stop = threading.Event()
        decided: list[int] = []
        drivers = [threading.Thread(target=_drive, args=(port, key, stop, decided)) for _ in range(4)]
        for driver in drivers:
            driver.start()
        deadline = time.monotonic() + 30
        while len(decided) < 60 or not export.exists() or export.stat().st_size == 0:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-stream: requests and export batches in flight
        process.wait(timeout=30)
        stop.set()
        for driver in drivers:
            driver.join(timeout=30)
        exported_before_restart = len(read_lines(export))

        process = _serve(db_url, port, log, export)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(20):
                assert client.post("/api/v1/governance/propose", json=proposal()).status_code == 200
        process.terminate()  # graceful: the exporter flushes what is committed
        assert process.wait(timeout=30) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    records = read_lines(export)
    assert_chain(records)
    assert len(records) > exported_before_restart
    store_head = _run_async(lambda: with_store(db_url, lambda store: store.chain_head()))
    assert records[-1]["sequence"] == store_head[0]
    assert records[-1]["hash"] == store_head[1]
    assert main(["audit", "verify", "--db", db_url]) == 0
