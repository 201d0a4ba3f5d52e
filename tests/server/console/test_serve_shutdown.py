"""`aegis-server serve` with a live inbox open: SIGTERM ends the event stream as a disconnect, so the
graceful shutdown does not wait its whole timeout for a response that never finishes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_support import POLICIES

SHUTDOWN_TIMEOUT = 120  # far longer than the test waits: the stream must not hold the shutdown


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str, Path]]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    env = {**os.environ, "AEGIS_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT)}
    cli = [sys.executable, "-m", "aegis_server"]
    key = (
        subprocess.run(
            [*cli, "keys", "create", "--name", "rita", "--scopes", "governance:review", "--db", db_url],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        .stdout.decode()
        .strip()
    )
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*cli, "serve", "--db", db_url, "--policy", str(POLICIES), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{endpoint}/api/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield process, endpoint, key, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_sigterm_ends_an_open_live_inbox(served: tuple[subprocess.Popen[bytes], str, str, Path]) -> None:
    process, endpoint, key, log = served
    with httpx.Client(base_url=endpoint, timeout=30) as client:
        signed_in = client.post("/console/sign-in", data={"api_key": key})
        assert signed_in.status_code == 303, signed_in.text
        cookie = client.cookies["aegis_console"]
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"GET /console/inbox/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            b"Cookie: aegis_console=" + cookie.encode() + b"\r\n\r\n"
        )
        received = b""
        while b"event: inbox" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=SHUTDOWN_TIMEOUT // 2)
        while sock.recv(65536):  # the server closed the stream's connection
            pass
    logs = log.read_text()
    assert code == 0, logs[-3000:]
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs, logs[-3000:]
    assert cookie not in logs and key not in logs
