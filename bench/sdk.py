"""SDK: `propose()` (sync and async) against a raw `httpx` POST of the same body to the same server.

The server is `aegis-server serve` on SQLite (as in the server benchmark). Both sides send the same
headers (Authorization, Content-Type, a fresh Idempotency-Key), one call at a time, alternating in
blocks so drift on a noisy machine hits both. Connection reuse: the client's pool holds one connection
after all the sequential calls. Concurrency: 100 parallel `propose()` on one `AsyncAegisClient`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from aegis_sdk import AegisClient, AsyncAegisClient

from ._common import ratio, summary_us
from .rules import server_proposal
from .server import PROPOSE, aegis_server


def _pool_size(client: httpx.Client | httpx.AsyncClient) -> int:
    pool = getattr(client._transport, "_pool", None)
    return len(getattr(pool, "connections", [])) if pool is not None else -1


def _sync(base: str, key: str, calls: int) -> dict[str, Any]:
    doc = server_proposal()
    body = json.dumps(doc).encode()
    raw_http = httpx.Client()
    sdk_http = httpx.Client()
    client = AegisClient(endpoint=base, api_key=key, http_client=sdk_http, retries=0)
    raw_ns: list[int] = []
    sdk_ns: list[int] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    clock = time.perf_counter_ns
    for block in range(calls // 50):
        for _ in range(50):
            t0 = clock()
            if block % 2:
                client.propose(actor=doc["actor"], action=doc["action"], context=doc["context"])
                sdk_ns.append(clock() - t0)
            else:
                r = raw_http.post(
                    base + PROPOSE, content=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
                )
                r.json()
                raw_ns.append(clock() - t0)
    out = {
        "raw_httpx": summary_us(raw_ns),
        "sdk": summary_us(sdk_ns),
        "connections_after": {"raw_httpx": _pool_size(raw_http), "sdk": _pool_size(sdk_http)},
    }
    out["ratio_p50_sdk_over_raw"] = ratio(out["sdk"]["p50_us"], out["raw_httpx"]["p50_us"])
    client.close()
    raw_http.close()
    return out


async def _async(base: str, key: str, calls: int, parallel: int) -> dict[str, Any]:
    doc = server_proposal()
    body = json.dumps(doc).encode()
    raw_http = httpx.AsyncClient()
    sdk_http = httpx.AsyncClient()
    client = AsyncAegisClient(endpoint=base, api_key=key, http_client=sdk_http, retries=0)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    raw_ns: list[int] = []
    sdk_ns: list[int] = []
    clock = time.perf_counter_ns
    for block in range(calls // 50):
        for _ in range(50):
            t0 = clock()
            if block % 2:
                await client.propose(actor=doc["actor"], action=doc["action"], context=doc["context"])
                sdk_ns.append(clock() - t0)
            else:
                r = await raw_http.post(
                    base + PROPOSE, content=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
                )
                r.json()
                raw_ns.append(clock() - t0)
    sequential_pool = _pool_size(sdk_http)
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(client.propose(actor=doc["actor"], action=doc["action"], context=doc["context"]) for _ in range(parallel))
    )
    wall = time.perf_counter() - t0
    out = {
        "raw_httpx": summary_us(raw_ns),
        "sdk": summary_us(sdk_ns),
        "connections_after": {"raw_httpx": _pool_size(raw_http), "sdk": sequential_pool},
        "parallel": {
            "calls": parallel,
            "decided": sum(1 for d in results if d.outcome),
            "wall_s": round(wall, 3),
            "decisions_per_s": round(parallel / wall, 1),
            "pool_connections_after": _pool_size(sdk_http),
        },
    }
    out["ratio_p50_sdk_over_raw"] = ratio(out["sdk"]["p50_us"], out["raw_httpx"]["p50_us"])
    await client.aclose()
    await raw_http.aclose()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    calls = 400 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="aegis-bench-sdk-") as tmpdir:
        tmp = Path(tmpdir)
        url = f"sqlite+aiosqlite:///{tmp / 'aegis.db'}"
        with aegis_server(url, tmp) as (base, auth, _proc):
            key = auth.removeprefix("Bearer ")
            sync = _sync(base, key, calls)
            asyn = asyncio.run(_async(base, key, calls, 100))
    return {
        "calls_per_side": calls // 2,
        "sync": sync,
        "async": asyn,
        "targets": {
            "sync_ratio<=1.10": sync["ratio_p50_sdk_over_raw"] <= 1.10,
            "async_ratio<=1.10": asyn["ratio_p50_sdk_over_raw"] <= 1.10,
            "one_connection_reused": sync["connections_after"]["sdk"] == 1 and asyn["connections_after"]["sdk"] == 1,
        },
    }
