"""Keys (issue 13, findings 1-3): what the actor binding and the per-key rate limit cost per decision.

`python -m bench.keys [--quick]` prints JSON. Not a pass/fail test. Measured in one run, each next to its
baseline:

- `actor_check_us`: `ActorBinding.allows` for a key bound to `*` (the baseline: a set lookup), to one
  `type:glob` pattern, and to ten patterns where the last one matches;
- `rate_limit_us`: `RateLimiter.check` in memory (the 0.1 path) and through Redis (one round trip on
  loopback; skipped when Redis does not answer);
- `propose_us`: a whole proposal through the in-process app (SQLite file, the API test policies) with a key
  bound to `*` and with a key bound to ten patterns: the difference is the binding's share of a decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from aegis_server.edge.rate_limits import RateLimiter
from aegis_server.inprocess import InProcessServer
from aegis_server.key_actors import ActorBinding

from ._common import summary_us

POLICIES = Path(__file__).resolve().parents[1] / "tests" / "server" / "api" / "policies.yaml"
TEN = (*(f"ai-agent:team-{n}-*" for n in range(9)), "ai-agent:support-bot-*")


def _time(fn: Any, n: int) -> dict[str, float]:
    for _ in range(min(1000, n)):
        fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        start = clock()
        fn()
        samples.append(clock() - start)
    return summary_us(samples)


async def _atime(fn: Any, n: int) -> dict[str, float]:
    for _ in range(min(200, n)):
        await fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        start = clock()
        await fn()
        samples.append(clock() - start)
    return summary_us(samples)


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def _run(quick: bool) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    results: dict[str, Any] = {}
    anyone, one, ten = ActorBinding(("*",)), ActorBinding(("ai-agent:support-bot-*",)), ActorBinding(TEN)
    results["actor_check_us"] = {
        "any (baseline)": _time(lambda: anyone.allows("support-bot-7", "ai-agent"), n),
        "one pattern": _time(lambda: one.allows("support-bot-7", "ai-agent"), n),
        "ten patterns": _time(lambda: ten.allows("support-bot-7", "ai-agent"), n),
    }

    limits: dict[str, Any] = {}
    memory = RateLimiter(10**9, 10**9)
    limits["memory (0.1 path)"] = await _atime(lambda: memory.check("key_bench"), n // 10)
    if _redis_answers():
        shared = RateLimiter(10**9, 10**9, redis_url="redis://127.0.0.1:6379/0")
        await shared.start()
        limits["redis (loopback)"] = await _atime(lambda: shared.check(f"key_bench_{time.time_ns()}"), n // 100)
    else:
        limits["redis (loopback)"] = "skipped: Redis at 127.0.0.1:6379 does not answer"
    results["rate_limit_us"] = limits

    proposals = 300 if quick else 2000
    body = {
        "actor": {"id": "support-bot-7"},
        "action": {"capability": "database.query", "parameters": {"query": "SELECT 1"}},
    }
    with tempfile.TemporaryDirectory(prefix="aegis-bench-keys-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'aegis.db'}"
        async with InProcessServer(policy_paths=[POLICIES], db_url=url, rate_limit_per_minute=0) as server:
            clients = {
                "key bound to * (baseline)": server.async_http_client(
                    await server.acreate_key("any", ["governance:propose"])
                ),
                "key bound to ten patterns": server.async_http_client(
                    await server.acreate_key("ten", ["governance:propose"], list(TEN))
                ),
            }
            propose: dict[str, Any] = {}
            for _round in range(2):  # alternate, so drift of a shared machine hits both
                for name, client in clients.items():

                    async def one_proposal(client: Any = client) -> None:
                        response = await client.post("/api/v1/governance/propose", json=body)
                        assert response.status_code == 200, response.text

                    propose[name] = await _atime(one_proposal, proposals // 2)
            results["propose_us"] = propose
    return results


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
