"""Where `aegis-server serve` spends its CPU under load: the profile behind the server figures.

    python3 -m uv run --group bench python -m bench.profile_server [--postgres] [--connections 32] [--seconds 10]

Starts `aegis-server serve` as `bench/server.py` does (SQLite file, or a fresh PostgreSQL database), loads it at
fixed concurrency (wrk when installed, else the Python generator) and samples it with py-spy meanwhile. Every
sample of the event loop's thread is charged to the room of its innermost frame (a C call such as SQLite's
`executemany` counts in the Python frame that made it), and the thread's top functions are listed. When
`perf` can sample this machine, the process's time by shared object comes too (interpreter, kernel, SQLite,
pydantic-core). Writes `bench/results/profile-<store>.md` and prints it. Not part of `make bench`: py-spy
slows the server it samples (~25%), so its throughput is not a figure; only the shares are.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import loadgen
from ._common import RESULTS_DIR
from .rules import server_proposal
from .server import PROPOSE, aegis_server, postgres_url

# The rooms of a request, by the file of the innermost frame (first match wins).
ROOMS: tuple[tuple[str, str], ...] = (
    ("aegis_server/store/", "store: the group commit's write (rows, chain links, SQLite/PostgreSQL)"),
    ("sqlalchemy/", "store: the group commit's write (rows, chain links, SQLite/PostgreSQL)"),
    ("asyncpg/", "store: the group commit's write (rows, chain links, SQLite/PostgreSQL)"),
    ("aiosqlite/", "store: the group commit's write (rows, chain links, SQLite/PostgreSQL)"),
    ("aegis_sdk/_wire/", "canonical JSON (parameter hash, audit payloads)"),
    ("aegis_server/engine/", "policy engine"),
    ("_re2", "policy engine"),
    ("aegis_server/governance/", "governance: deciding, building the decision"),
    ("aegis_server/policies/", "governance: deciding, building the decision"),
    ("aegis_server/ids.py", "governance: deciding, building the decision"),
    ("aegis_server/security.py", "authentication and scopes"),
    ("aegis_server/key_actors.py", "authentication and scopes"),
    ("aegis_server/api/", "API: the propose endpoint, the answer"),
    ("aegis_server/edge/", "edge: request context, body guard, HTTP protocol, socket writes"),
    ("aegis_server/app.py", "edge: request context, body guard, HTTP protocol, socket writes"),
    ("aegis_server/observability/", "edge: request context, body guard, HTTP protocol, socket writes"),
    ("uvicorn/", "uvicorn and httptools"),
    ("starlette/", "Starlette request and response objects"),
    ("pydantic", "pydantic validation and serialisation"),
    ("aegis_sdk/models.py", "pydantic validation and serialisation"),
    ("<string>", "pydantic validation and serialisation"),
    ("json/", "the strict JSON body parse"),
    ("logging/", "access log"),
    ("aegis_server/cli/log_output.py", "access log"),
    ("prometheus_client/", "metrics"),
    ("aegis_server/metrics.py", "metrics"),
    ("asyncio/", "event loop (its polling and scheduling)"),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def room_of(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    for prefix, room in ROOMS:
        if prefix in path:
            return room
    return "other"


def summarise(raw: str) -> dict[str, Any]:
    """Shares of the event loop's thread (py-spy's first frame is the server's entry point there) by room
    and by innermost function, from py-spy's `--format raw` output."""
    rooms: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    loop_samples = other_threads = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if "(aegis-server" not in frames[0] and "aegis_server/__main__" not in frames[0]:
            other_threads += count
            continue
        loop_samples += count
        innermost = frames[-1]
        rooms[room_of(innermost)] += count
        functions[innermost.rsplit(":", 1)[0] + ")"] += count

    def share(part: int) -> float:
        return round(100.0 * part / loop_samples, 1) if loop_samples else 0.0

    return {
        "loop_thread_samples": loop_samples,
        "other_thread_samples": other_threads,
        "rooms_percent": {room: share(n) for room, n in rooms.most_common()},
        "top_functions_percent": {name: share(n) for name, n in functions.most_common(25)},
    }


def perf_by_library(pid: int, seconds: float, tmp: Path) -> dict[str, float] | None:
    """The process's samples by shared object, from `perf record` (None when perf cannot sample here)."""
    if shutil.which("perf") is None:
        return None
    data = tmp / "perf.data"
    recorded = subprocess.run(
        ["perf", "record", "-F", "999", "-p", str(pid), "-o", str(data), "--", "sleep", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )
    if recorded.returncode != 0 or not data.exists():
        return None
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio"], capture_output=True, text=True, check=False
    )
    shares: dict[str, float] = {}
    for line in report.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            shares[parts[1]] = float(parts[0].rstrip("%"))
    return dict(list(shares.items())[:12]) or None


def markdown(store: str, connections: int, seconds: float, result: dict[str, Any]) -> str:
    lines = [
        f"# Where `aegis-server serve` spends its CPU ({store}, {connections} connections, {seconds:.0f} s)",
        "",
        f"Command: `python -m bench.profile_server{' --postgres' if store == 'postgresql' else ''} "
        f"--connections {connections} --seconds {seconds:.0f}`. Load during the sampling: "
        f"{result['load']['rps']:.0f} requests/s (under py-spy, which slows the server).",
        "",
        "| room (innermost frame of the event loop's thread) | share of its samples |",
        "|---|---|",
    ]
    summary = result["py_spy"]
    lines += [f"| {room} | {share}% |" for room, share in summary["rooms_percent"].items()]
    lines += ["", "| function (innermost) | share |", "|---|---|"]
    lines += [f"| `{name}` | {share}% |" for name, share in summary["top_functions_percent"].items()]
    if result.get("perf_by_library"):
        lines += ["", "| shared object (perf, whole process) | share |", "|---|---|"]
        lines += [f"| {dso} | {share}% |" for dso, share in result["perf_by_library"].items()]
    return "\n".join(lines) + "\n"


def profile(postgres: bool, connections: int, seconds: float) -> tuple[str, dict[str, Any]]:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit("py-spy is not installed: run with `uv run --group bench`")
    body = json.dumps(server_proposal()).encode()
    with tempfile.TemporaryDirectory(prefix="aegis-profile-") as tmpdir:
        tmp = Path(tmpdir)
        db_url = postgres_url() if postgres else f"sqlite+aiosqlite:///{tmp / 'aegis.db'}"
        if db_url is None:
            raise SystemExit("PostgreSQL is not reachable (AEGIS_BENCH_POSTGRES_URL)")
        store = "postgresql" if postgres else "sqlite"
        with aegis_server(db_url, tmp) as (base, auth, proc):
            url = base + PROPOSE
            loadgen.closed_loop(url, body, auth, connections, 2.0)  # warm-up
            load: dict[str, Any] = {}
            # The load runs a little longer than the sampling on both ends.
            loader = threading.Thread(
                target=lambda: load.update(loadgen.closed_loop(url, body, auth, connections, seconds * 2 + 2))
            )
            loader.start()
            time.sleep(1.0)
            raw_path = tmp / "py-spy.txt"
            subprocess.run(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(raw_path),
                    "--nonblocking",
                ],
                capture_output=True,
                check=True,
            )
            by_library = perf_by_library(proc.pid, seconds, tmp)
            loader.join()
            result = {"load": load, "py_spy": summarise(raw_path.read_text()), "perf_by_library": by_library}
    return store, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_server", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="profile on PostgreSQL instead of a SQLite file")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    store, result = profile(args.postgres, args.connections, args.seconds)
    text = markdown(store, args.connections, args.seconds, result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"profile-{store}.md").write_text(text)
    (RESULTS_DIR / f"profile-{store}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
