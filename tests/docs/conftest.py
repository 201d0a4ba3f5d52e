"""A real aegis-server for the documentation's snippets: `python -m aegis_server serve` on SQLite in a
temporary folder, a free loopback port and the example policies, as a reader's `make serve` would run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "examples" / "policies"


@dataclass(frozen=True)
class DocsServer:
    endpoint: str
    api_key: str  # an admin key: the snippets propose, manage policies and read the audit log
    reviewer_key: str  # a reviewer's key (the key that proposed a decision may not review it)


def _cli(db_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aegis_server", *args, "--db", db_url],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"aegis-server {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="session")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsServer]:
    folder = tmp_path_factory.mktemp("docs-server")
    db_url = f"sqlite+aiosqlite:///{folder / 'aegis.db'}"
    _cli(db_url, "db", "upgrade")
    api_key = _cli(db_url, "keys", "create", "--name", "docs-reader", "--scopes", "admin", "--actors", "*")
    reviewer_key = _cli(db_url, "keys", "create", "--name", "alice", "--scopes", "governance:review,governance:read")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(POLICIES)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "AEGIS_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"aegis-server exited early: {''.join(output)}")
            try:
                if httpx.get(f"{endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aegis-server not ready in 30 s: {''.join(output)}")
            time.sleep(0.05)
        yield DocsServer(endpoint, api_key, reviewer_key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
