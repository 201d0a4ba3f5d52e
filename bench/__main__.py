"""`python -m bench` (`make bench`): every benchmark, each with its baseline of the same run.

Writes bench/results/latest.json and bench/results/latest.md. Options: `--quick` (shorter runs, smaller
scale), `--only engine,boundaries,trust,peers,server,sdk,adapters,otel,replay,scale`, `--no-postgres`. None of this is a
pass/fail test: the `targets` entries say where a run landed against the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Any

from . import adapters, audit_chain, boundaries, engine, keys, otel, peers, replay, report, scale, sdk, server
from ._common import RESULTS_DIR, dump_json, machine

SUITES = ("engine", "boundaries", "trust", "peers", "server", "sdk", "adapters", "otel", "replay", "scale")
BUDGET_SECONDS = 570.0  # `make bench` stays under ten minutes: the memory run takes what the others left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs and a smaller scale test")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL server runs")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES)}")
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
    }
    started = time.perf_counter()
    deadline = time.monotonic() + BUDGET_SECONDS
    for name in chosen:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "engine":
                results[name] = engine.run(args.quick)
            elif name == "boundaries":
                results[name] = boundaries.run(args.quick)
            elif name == "trust":
                results[name] = {"keys": keys.run(args.quick), "audit_chain": audit_chain.run(args.quick)}
            elif name == "peers":
                results[name] = peers.run(args.quick)
            elif name == "server":
                results[name] = server.run(args.quick, postgres=not args.no_postgres)
            elif name == "sdk":
                results[name] = sdk.run(args.quick)
            elif name == "adapters":
                results[name] = adapters.run(args.quick)
            elif name == "otel":
                results[name] = otel.run(args.quick)
            elif name == "replay":
                results[name] = replay.run(args.quick)
            elif name == "scale":
                results[name] = scale.run(args.quick, deadline=deadline)
        except Exception as exc:  # one broken suite must not lose the others' results
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        print(f"[bench] {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    results["total_s"] = round(time.perf_counter() - started, 1)
    dump_json(RESULTS_DIR / "latest.json", results)
    markdown = report.markdown(results)
    (RESULTS_DIR / "latest.md").write_text(markdown)
    print(markdown)
    print(json.dumps({"written": str(RESULTS_DIR / "latest.json")}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
