"""Adapters: what governing a call adds, as a multiple of one server round trip, and how many server requests
it sends on the caller's path.

Against one `aegis-server serve` (SQLite, the example policies, rate limit off), sequential calls:

- **round trip**: a raw `httpx` POST of a proposal to `/api/v1/governance/propose` (keep-alive) — the unit;
- **FastAPI**: the same route served in process (httpx's ASGI transport) ungoverned and governed with
  `aegis_fastapi.Aegis.require("database.query")` — the governed one proposes, runs on ALLOW, then queues
  its execution report (`report_execution=True`, the default) for the client's background reporter;
- **LangChain**: a plain `@tool` and the same function as `aegis_langchain.governed_tool`, `invoke()`
  (sync client) — governed: propose, run, queue the execution report.

Added latency = governed p50 − ungoverned p50; the multiple divides it by the round trip p50.

Requests per governed call (a separate pass, so the counting hook never weighs on the latencies): an httpx
request event hook on the SDK client's own `http_client` sorts each request it sends by who sends it — the
background reporter (its thread or task is named `aegis-execution-reports`) or anyone else, i.e. the governed
call itself, on its caller's path — and both counts are divided by the number of governed calls, after a
final flush so every report is counted.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations (local classes) as objects.
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx

from .rules import server_proposal
from .server import PROPOSE, aegis_server

_QUERY = {"query": "SELECT id, email FROM users WHERE id = 42", "database": "production"}


def _p50_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def _sync_samples(call: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(50, n)):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


async def _async_samples(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(50, n)):
        await call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    return samples


REPORTER = "aegis-execution-reports"  # the name of the SDK reporter's thread (sync) and task (async)


class _RequestCount:
    """Requests an SDK client sent: by its background reporter, or on the caller's path (anything else)."""

    def __init__(self) -> None:
        self.caller = 0
        self.reporter = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        by_reporter = threading.current_thread().name == REPORTER
        if not by_reporter:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no running loop: a sync caller's thread
                task = None
            by_reporter = task is not None and task.get_name() == REPORTER
        with self._lock:
            if by_reporter:
                self.reporter += 1
            else:
                self.caller += 1

    def sync_hook(self, request: httpx.Request) -> None:
        self._count()

    async def async_hook(self, request: httpx.Request) -> None:
        self._count()

    def per_call(self, calls: int) -> dict[str, float]:
        return {
            "caller_requests_per_call": round(self.caller / calls, 3),
            "reporter_requests_per_call": round(self.reporter / calls, 3),
        }


def _round_trip(base: str, auth: str, n: int) -> list[float]:
    body = json.dumps(server_proposal()).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    with httpx.Client() as client:

        def call() -> None:
            client.post(base + PROPOSE, content=body, headers=headers).raise_for_status()

        return _sync_samples(call, n)


def _fastapi_app(aegis: Any) -> Any:
    from fastapi import Depends, FastAPI
    from pydantic import BaseModel

    from aegis_fastapi import Decision

    class Query(BaseModel):
        query: str
        database: str

    app = FastAPI()
    governed_dep = Annotated[Decision, Depends(aegis.require("database.query"))]

    @app.post("/plain")
    async def plain(body: Query) -> dict[str, Any]:
        return {"rows": 1, "database": body.database}

    @app.post("/governed")
    async def governed(body: Query, decision: governed_dep) -> dict[str, Any]:
        return {"rows": 1, "database": body.database}

    return app


async def _fastapi(base: str, key: str, n: int, counted_calls: int) -> dict[str, Any]:
    from aegis_fastapi import Aegis
    from aegis_sdk import Actor, AsyncAegisClient

    def actor() -> Actor:
        return Actor(id="support-bot", type="ai-agent")

    async def run(platform: AsyncAegisClient, calls: int | None) -> dict[str, list[float]]:
        aegis = Aegis(actor=actor, client=platform)
        transport = httpx.ASGITransport(app=_fastapi_app(aegis))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:

            async def call_plain() -> None:
                (await client.post("/plain", json=_QUERY)).raise_for_status()

            async def call_governed() -> None:
                (await client.post("/governed", json=_QUERY)).raise_for_status()

            if calls is not None:  # the counting pass
                for _ in range(calls):
                    await call_governed()
                samples: dict[str, list[float]] = {}
            else:
                samples = {
                    "ungoverned": await _async_samples(call_plain, n),
                    "governed": await _async_samples(call_governed, n),
                }
        if not await aegis.drain():  # the last execution reports, before the client closes (no lifespan here)
            raise RuntimeError(f"execution reports left unsent: {platform.report_stats}")
        return samples

    async with AsyncAegisClient(endpoint=base, api_key=key) as platform:
        samples = await run(platform, None)
    count = _RequestCount()
    async with (
        httpx.AsyncClient(timeout=30.0, event_hooks={"request": [count.async_hook]}) as http,
        AsyncAegisClient(endpoint=base, api_key=key, http_client=http) as platform,
    ):
        await run(platform, counted_calls)
    return {**samples, "requests": count.per_call(counted_calls)}


def _langchain(base: str, key: str, n: int, counted_calls: int) -> dict[str, Any]:
    from langchain_core.tools import tool

    from aegis_langchain import governed_tool
    from aegis_sdk import AegisClient

    def run_query(query: str, database: str) -> str:
        """Run a read-only SQL query."""
        return f"1 row from {database}"

    plain = tool("database_query")(run_query)
    with AegisClient(endpoint=base, api_key=key) as platform:
        governed = governed_tool("database.query", client=platform, actor="support-bot")(run_query)
        ungoverned_samples = _sync_samples(lambda: plain.invoke(_QUERY), n)
        governed_samples = _sync_samples(lambda: governed.invoke(_QUERY), n)
        answer = governed.invoke(_QUERY)
        if "1 row" not in str(answer):
            raise RuntimeError(f"the governed tool did not run: {answer!r}")
        if not platform.flush_reports():
            raise RuntimeError(f"execution reports left unsent: {platform.report_stats}")
    count = _RequestCount()
    with (
        httpx.Client(timeout=30.0, event_hooks={"request": [count.sync_hook]}) as http,
        AegisClient(endpoint=base, api_key=key, http_client=http) as platform,
    ):
        counted = governed_tool("database.query", client=platform, actor="support-bot")(run_query)
        for _ in range(counted_calls):
            counted.invoke(_QUERY)
        if not platform.flush_reports():
            raise RuntimeError(f"execution reports left unsent: {platform.report_stats}")
    return {"ungoverned": ungoverned_samples, "governed": governed_samples, "requests": count.per_call(counted_calls)}


def _row(name: str, samples: dict[str, Any], round_trip_us: float) -> dict[str, Any]:
    plain, governed = _p50_us(samples["ungoverned"]), _p50_us(samples["governed"])
    added = round(governed - plain, 1)
    return {
        "adapter": name,
        "ungoverned_p50_us": plain,
        "governed_p50_us": governed,
        "added_p50_us": added,
        "added_in_round_trips": round(added / round_trip_us, 2) if round_trip_us else None,
        **samples["requests"],
    }


def run(quick: bool = False) -> dict[str, Any]:
    n = 200 if quick else 1000
    counted = 100 if quick else 500  # governed calls of the request-counting pass
    with tempfile.TemporaryDirectory(prefix="aegis-bench-adapters-") as tmpdir:
        tmp = Path(tmpdir)
        db_url = f"sqlite+aiosqlite:///{tmp / 'aegis.db'}"
        with aegis_server(db_url, tmp) as (base, auth, _proc):
            key = auth.split(" ", 1)[1]
            round_trip_us = _p50_us(_round_trip(base, auth, n))
            fastapi_samples = asyncio.run(_fastapi(base, key, n, counted))
            langchain_samples = _langchain(base, key, n, counted)
    return {
        "calls_per_point": n,
        "counted_calls": counted,
        "round_trip_p50_us": round_trip_us,
        "rows": [
            _row("FastAPI route (aegis_fastapi.Aegis.require)", fastapi_samples, round_trip_us),
            _row("LangChain tool invoke (aegis_langchain.governed_tool)", langchain_samples, round_trip_us),
        ],
    }
