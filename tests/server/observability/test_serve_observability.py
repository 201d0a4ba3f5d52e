"""`aegis-server serve` with OTEL_TRACES_EXPORTER=console and AEGIS_METRICS_LISTEN: it says where traces go,
serves /metrics on the separate address alone, and exports the buffered spans when it stops (SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

POLICIES = Path(__file__).parents[1] / "api" / "policies.yaml"
TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4736"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_serve_traces_to_the_console_and_serves_metrics_apart(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AEGIS_"))}
    env.update(
        OTEL_TRACES_EXPORTER="console",
        OTEL_BSP_SCHEDULE_DELAY="600000",  # nothing exported before the shutdown flushes it
        AEGIS_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    )
    db = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    command = [sys.executable, "-m", "aegis_server", "serve", "--db", db, "--policy", str(POLICIES)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "".join(output)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.05)
        traced = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/health", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        )
        assert traced.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert (metrics.status_code == 200 and "aegis_http_requests" in metrics.text) or "aegis_" in metrics.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=5)
    text = "".join(output)
    assert "traces are exported to: console" in text
    assert f"/metrics is served at http://127.0.0.1:{metrics_port} alone" in text
    assert '"name": "GET /api/v1/health"' in text and f"0x{TRACE_ID}" in text


@pytest.mark.parametrize("listen", ["127.0.0.1:{port}", "0.0.0.0:{port}"])
def test_serve_refuses_a_metrics_address_that_is_the_apis_own(tmp_path: Path, listen: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AEGIS_"))}
    env["AEGIS_METRICS_LISTEN"] = listen.format(port=port)
    db = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    command = [sys.executable, "-m", "aegis_server", "serve", "--db", db, "--policy", str(POLICIES)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-800:]
    assert "the API's own address" in done.stderr and "a port of its own" in done.stderr
