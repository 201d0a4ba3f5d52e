"""HTTP load generators, each run as a separate process so the server under test keeps its own core.

- `wrk` (C, epoll) for fixed concurrency when it is installed: keep-alive connections, a Lua script that
  POSTs the body and prints the latency percentiles as JSON.
- `python -m bench.loadgen` otherwise, and always for fixed offered rates (open loop: requests are
  sent on a schedule whatever the answers do, and latency counts from the scheduled time, so a stalled
  server shows up as latency rather than as fewer requests — no coordinated omission).

Both only talk to 127.0.0.1 and stop after a bounded duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._common import percentile

_WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = io.open(os.getenv("BENCH_BODY_FILE")):read("*a")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_s": %.6f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status, errors,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _header_lines(headers: Mapping[str, str] | None) -> list[str]:
    return [f"{name}: {value}" for name, value in (headers or {}).items()]


def run_wrk(
    url: str,
    body: bytes,
    auth: str | None,
    connections: int,
    duration: float,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Closed loop at `connections` keep-alive connections for `duration` seconds (one wrk thread); `headers`
    are sent with every request."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT)
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        env = {
            "BENCH_BODY_FILE": str(body_file),
            "BENCH_AUTH": auth or "",
            "BENCH_HEADERS": "\n".join(_header_lines(headers)),
            "PATH": "/usr/bin:/bin",
        }
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(script), url]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            data["rps"] = round((data["requests"] - data["non_2xx"]) / data["duration_s"], 1)
            data["tool"] = "wrk"
            return data
    raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stderr.strip()[:300]}")


def run_python(
    url: str,
    body: bytes,
    auth: str | None,
    *,
    connections: int,
    duration: float,
    rate: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run this module in a separate process (closed loop, or open loop at `rate` requests/s)."""
    argv = [sys.executable, "-m", "bench.loadgen", url, "--connections", str(connections), "--duration", str(duration)]
    for line in _header_lines(headers):
        argv += ["--header", line]
    if rate is not None:
        argv += ["--rate", str(rate)]
    if auth:
        argv += ["--auth", auth]
    out = subprocess.run(
        argv,
        input=body,
        capture_output=True,
        timeout=duration + 120,
        check=False,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.decode(errors='replace').strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def closed_loop(
    url: str,
    body: bytes,
    auth: str | None,
    connections: int,
    duration: float,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fixed concurrency: wrk where installed, else the Python generator."""
    if have_wrk():
        return run_wrk(url, body, auth, connections, duration, headers)
    return run_python(url, body, auth, connections=connections, duration=duration, headers=headers)


# -- the Python generator (runs in its own process) ------------------------------------------------


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await self.reader.readexactly(length)
        return status


async def _connect(host: str, port: int) -> _Conn:
    reader, writer = await asyncio.open_connection(host, port)
    return _Conn(reader, writer)


def _raw_request(url: str, body: bytes, auth: str | None, extra: Sequence[str] = ()) -> tuple[str, int, bytes]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    headers = [
        f"POST /{path} HTTP/1.1",
        f"Host: {hostport}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if auth:
        headers.append(f"Authorization: {auth}")
    headers.extend(extra)
    return host, int(port or 80), ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def _closed(
    url: str, body: bytes, auth: str | None, connections: int, duration: float, extra: Sequence[str] = ()
) -> dict[str, Any]:
    host, port, raw = _raw_request(url, body, auth, extra)
    conns = [await _connect(host, port) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker(conn: _Conn) -> None:
        nonlocal errors
        clock = time.perf_counter
        while clock() < deadline:
            start = clock()
            status = await conn.request(raw)
            if status >= 300:
                errors += 1
            latencies.append(clock() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.writer.close()
    return _report(latencies, errors, elapsed, tool="python closed loop")


async def _open(
    url: str, body: bytes, auth: str | None, connections: int, duration: float, rate: float
) -> dict[str, Any]:
    host, port, raw = _raw_request(url, body, auth)
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await _connect(host, port))
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    interval = 1.0 / rate
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []

    async def one(scheduled: float) -> None:
        nonlocal errors
        conn = await idle.get()  # waiting for a free connection counts as latency (it is queueing)
        status = await conn.request(raw)
        latencies.append(time.perf_counter() - scheduled)
        if status >= 300:
            errors += 1
        idle.put_nowait(conn)

    for k in range(total):
        scheduled = start + k * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    result = _report(latencies, errors, elapsed, tool="python open loop")
    result["offered_rps"] = rate
    return result


def _report(latencies: list[float], errors: int, elapsed: float, *, tool: str) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "tool": tool,
        "requests": len(ms),
        "non_2xx": errors,
        "duration_s": round(elapsed, 3),
        "rps": round((len(ms) - errors) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else 0.0,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="POST one JSON body (read from stdin) to a loopback URL")
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s (default: closed loop)")
    parser.add_argument("--auth", help="Authorization header value")
    parser.add_argument("--header", action="append", default=[], help="another header, 'Name: value' (repeatable)")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("the load generator only targets loopback addresses")
    body = sys.stdin.buffer.read()
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    if args.rate:
        result = run(_open(args.url, body, args.auth, args.connections, args.duration, args.rate))
    else:
        result = run(_closed(args.url, body, args.auth, args.connections, args.duration, args.header))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
