"""The network edge (issue 13, finding 7): what the connection hardening of `aegis-server serve` costs,
and what it buys. `python -m bench.edge [--quick]` writes bench/results/edge.json.

Servers compared, each the AEGIS app on a SQLite file with the example policies, one process:

- `uvicorn-stock`: uvicorn (uvloop, httptools) with its own protocol, as `serve` ran before issue 13;
- `aegis-serve`: `aegis-server serve` as it runs now (`aegis_server.edge.http_server`: the head timer, the
  JSON protocol 400, the open-files limit raised);
- `granian` (when importable, e.g. `uv run --with granian python -m bench.edge`): the Rust ASGI server,
  with its own header-read timeout.

Measured for each: decisions/s at 32 keep-alive connections (closed loop) and the server's CPU time per
decision (for `aegis-serve` also while `/api/v1/ready` is polled ten times a second: its write probe);
then, with 2,000 sockets open (half a partial request head, half nothing), how long a new client waits
for `/health`, and how many of the 2,000 the server closed by itself within the header timeout + 5 s; and
with 1,000 sockets that sent a complete head announcing a body, and one byte of it, how many the server
answered and closed within the body timeout + 5 s.
The same again with the soft open-files limit at 1,024 (a common default), where a server that does not
raise it cannot accept the new client. Loopback only, bounded in time and count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import loadgen
from ._common import POLICIES, RESULTS_DIR, cpu_seconds, dump_json, free_port, machine, percentile, server_process
from .rules import server_proposal

HEADER_TIMEOUT = 5.0
BODY_TIMEOUT = 5.0
SOCKETS = 2000
SLOW_BODIES = 1000
PROPOSE = "/api/v1/governance/propose"

# The app under each server: the same create_app and settings; only the HTTP server differs.
_STOCK = """
import sys, uvicorn
from aegis_server.app import create_app
from aegis_server.cli.serve import configure_logging
from aegis_server.settings import Settings
settings = Settings.from_env()
configure_logging(settings.log_level)
uvicorn.run(create_app(settings, freeze_gc_after_startup=True), host="127.0.0.1", port=int(sys.argv[1]),
            access_log=False, log_config=None, server_header=False)
"""
_GRANIAN_APP = """
from aegis_server.app import create_app
from aegis_server.settings import Settings
app = create_app(Settings.from_env(), freeze_gc_after_startup=True)
"""


def _cli(db_url: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "aegis_server", *args, "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"aegis-server {args[0]} failed: {out.stderr.strip()[-400:]}")
    return out.stdout.strip()


def _have_granian() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


def _argv(kind: str, port: int, tmp: Path, db_url: str) -> list[str]:
    if kind == "uvicorn-stock":
        return [sys.executable, "-c", _STOCK, str(port)]
    if kind == "aegis-serve":
        return [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(POLICIES),
                "--port", str(port), "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                "--log-level", "warning"]  # fmt: skip
    (tmp / "granian_app.py").write_text(_GRANIAN_APP)
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--workers", "1", "--http", "1", "--no-ws", "--log-level", "warning",
            "--http1-header-read-timeout", str(int(HEADER_TIMEOUT * 1000)), "--working-dir", str(tmp),
            "granian_app:app"]  # fmt: skip


@contextlib.contextmanager
def _server(kind: str, tmp: Path, nofile: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    db_url = f"sqlite+aiosqlite:///{tmp / kind}.db"
    _cli(db_url, "db", "upgrade")
    port = free_port()
    env = {
        "AEGIS_DB_URL": db_url,
        "AEGIS_POLICY_PATHS": str(POLICIES),
        "AEGIS_RATE_LIMIT_PER_MINUTE": "0",
        "AEGIS_LOG_LEVEL": "WARNING",
    }
    argv = _argv(kind, port, tmp, db_url)
    if nofile is not None:  # the child starts with this soft limit of open files (`prlimit`)
        argv = ["prlimit", f"--nofile={nofile}:{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}", "--", *argv]
    base = f"http://127.0.0.1:{port}"
    with server_process(argv, base + "/api/v1/health", env=env, log=tmp / f"{kind}-{port}.log") as proc:
        yield base, proc


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (granian serves from a worker process)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError, ValueError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _tree_cpu(int(child))
    return total


def _poll_ready(base: str, stop: threading.Event, answers: list[int]) -> None:
    """GET /ready every 0.1 s (a load balancer's health check, polled hard) until `stop`."""
    while not stop.wait(0.1):
        try:
            with urllib.request.urlopen(base + "/api/v1/ready", timeout=5) as response:
                answers.append(response.status)
        except urllib.error.HTTPError as exc:
            answers.append(exc.code)
        except OSError:
            answers.append(0)


def _throughput(kind: str, tmp: Path, duration: float, *, poll_ready: bool = False) -> dict[str, Any]:
    with _server(kind, tmp) as (base, proc):
        db_url = f"sqlite+aiosqlite:///{tmp / kind}.db"
        key = _cli(db_url, "keys", "create", "--name", "bench", "--scopes", "governance:propose", "--actors", "*")
        body = json.dumps(server_proposal()).encode()
        loadgen.run_python(base + PROPOSE, body, f"Bearer {key}", connections=4, duration=1.0)  # warm up
        stop = threading.Event()
        ready_answers: list[int] = []
        poller = threading.Thread(target=_poll_ready, args=(base, stop, ready_answers), daemon=True)
        before = _tree_cpu(proc.pid)
        if poll_ready:
            poller.start()
        result = loadgen.closed_loop(base + PROPOSE, body, f"Bearer {key}", 32, duration)
        used = _tree_cpu(proc.pid) - before
        stop.set()
        if poll_ready:
            poller.join(timeout=10)
            result["ready_polls"] = len(ready_answers)
            result["ready_non_200"] = sum(1 for status in ready_answers if status != 200)
        answered = int(result["requests"]) - int(result["non_2xx"])
        result["server_cpu_us_per_decision"] = round(used / answered * 1e6, 1) if answered else None
        return result


def _get_health(base: str, timeout: float = 10.0) -> tuple[float | None, str]:
    host, port = base.removeprefix("http://").split(":")
    started = time.perf_counter()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        return None, f"{type(exc).__name__}"
    elapsed = time.perf_counter() - started
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") or "empty reply"
    return (elapsed if status.startswith("HTTP/1.1 200") else None), status


def _slowloris(kind: str, tmp: Path, nofile: int | None) -> dict[str, Any]:
    with _server(kind, tmp, nofile) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        socks: list[socket.socket] = []
        opened_at = time.monotonic()
        refused = 0
        try:
            for i in range(SOCKETS):
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    refused += 1
                    continue
                if i % 2 == 0:
                    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: bench\r\nX-Slow: 1\r\n")
                sock.setblocking(False)
                socks.append(sock)
            time.sleep(0.5)  # let the server accept the backlog
            waits = []
            statuses = []
            for _ in range(10):
                elapsed, status = _get_health(base)
                statuses.append(status)
                if elapsed is not None:
                    waits.append(elapsed * 1000)
            closed = _closed_within(socks, opened_at + HEADER_TIMEOUT + 5)
        finally:
            for sock in socks:
                sock.close()
        return {
            "sockets_opened": len(socks),
            "connect_failures": refused,
            "new_client_answers": f"{len(waits)}/10",
            "new_client_statuses": sorted(set(statuses)),
            "new_client_p50_ms": round(percentile(waits, 50), 2) if waits else None,
            "new_client_max_ms": round(max(waits), 2) if waits else None,
            "closed_by_server_within_timeout_plus_5s": closed,
        }


def _slow_bodies(kind: str, tmp: Path) -> dict[str, Any]:
    """SLOW_BODIES connections send a complete head announcing 100,000 bytes of body, then one byte: how long
    a new client waits, and how many of them the server answers and closes within the body timeout + 5 s."""
    head = (
        b"POST /api/v1/governance/propose HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    with _server(kind, tmp) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        socks: list[socket.socket] = []
        opened_at = time.monotonic()
        try:
            for _ in range(SLOW_BODIES):
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.sendall(head)
                except OSError:
                    continue
                sock.setblocking(False)
                socks.append(sock)
            time.sleep(0.5)
            waits = []
            for _ in range(10):
                elapsed, _status = _get_health(base)
                if elapsed is not None:
                    waits.append(elapsed * 1000)
            closed = _closed_within(socks, opened_at + BODY_TIMEOUT + 5)
        finally:
            for sock in socks:
                sock.close()
        return {
            "sockets_opened": len(socks),
            "new_client_answers": f"{len(waits)}/10",
            "new_client_max_ms": round(max(waits), 2) if waits else None,
            "closed_by_server_within_body_timeout_plus_5s": closed,
        }


def _closed_within(socks: list[socket.socket], deadline: float) -> int:
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    try:
        while closed < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.25):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    closed += 1
    finally:
        selector.close()
    return closed


def run(quick: bool = False) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SOCKETS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    kinds = ["uvicorn-stock", "aegis-serve"] + (["granian"] if _have_granian() else [])
    duration = 3.0 if quick else 8.0
    results: dict[str, Any] = {
        "machine": machine(),
        "header_timeout_s": HEADER_TIMEOUT,
        "body_timeout_s": BODY_TIMEOUT,
        "sockets": SOCKETS,
        "slow_body_sockets": SLOW_BODIES,
    }
    with tempfile.TemporaryDirectory(prefix="aegis-bench-edge-") as folder:
        tmp = Path(folder)
        for kind in kinds:
            entry: dict[str, Any] = {}
            print(f"[edge] {kind}: throughput", file=sys.stderr, flush=True)
            entry["throughput_32_connections"] = _throughput(kind, tmp, duration)
            if kind == "aegis-serve":
                # The readiness write probe (at most once a second, whatever the polling rate) under load.
                print(f"[edge] {kind}: throughput with /ready polled 10 times a second", file=sys.stderr, flush=True)
                entry["throughput_with_ready_polled"] = _throughput(kind, tmp, duration, poll_ready=True)
            print(f"[edge] {kind}: {SOCKETS} idle/partial sockets", file=sys.stderr, flush=True)
            entry["slowloris"] = _slowloris(kind, tmp, None)
            print(f"[edge] {kind}: the same under a soft limit of 1,024 open files", file=sys.stderr, flush=True)
            entry["slowloris_nofile_1024"] = _slowloris(kind, tmp, 1024)
            print(f"[edge] {kind}: {SLOW_BODIES} slow bodies", file=sys.stderr, flush=True)
            entry["slow_bodies"] = _slow_bodies(kind, tmp)
            results[kind] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.quick)
    dump_json(RESULTS_DIR / "edge.json", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
