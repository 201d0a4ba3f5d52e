"""OpenTelemetry: what tracing costs, off (no provider: the default) and on, each against its baseline of the run.

- **SDK**: `AegisClient.propose()` against an in-process transport that answers a fixed decision (so only the
  client's own work is timed), with no TracerProvider (the application configured no tracing) and with one
  (an SDK TracerProvider, every span sampled, exported by a BatchSpanProcessor to an exporter that drops them).
  Blocks alternate so drift on a noisy machine hits both; the ratio is on/off by p50.
- **Server**: `aegis-server serve` on SQLite, closed loop at 32 connections (wrk where installed), three ways
  in the same run: tracing off (no OTEL_* variable), on with every trace sampled and exported over OTLP/HTTP
  to a loopback collector stub run here (it answers 200 and counts what it received), and on with the
  parent-based ratio sampler at 0 (spans made, none recorded). Requests carry a sampled `traceparent`, as a
  traced caller's would. Ratios are decisions/s against the off run.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from aegis_sdk import AegisClient

from . import loadgen
from ._common import ratio, summary_us
from .rules import server_proposal
from .server import PROPOSE, aegis_server

_DECISION = {
    "decision_id": "dec_bench",
    "outcome": "ALLOW",
    "reason": "bench",
    "risk_score": 0.1,
    "constraints": {},
    "policy_ids": ["bench"],
    "timestamp": "2026-12-07T00:00:00Z",
    "audit_ref": "aud_bench",
}
# A sampled W3C parent, as a traced caller sends it (the server continues it when tracing is on).
_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- the SDK ---------------------------------------------------------------------------------------


def _fixed_decision(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=_DECISION)


@contextlib.contextmanager
def _provider(on: bool) -> Iterator[None]:
    """The global TracerProvider for a block: none (the API's default), or an SDK provider whose spans are
    batched to an exporter that drops them. The API sets its global once per process, so reset it after."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    def reset() -> None:
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()

    if not on:
        reset()
        yield
        return
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class _Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    reset()
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()
        reset()


def run_sdk(calls: int) -> dict[str, Any]:
    doc = server_proposal()
    client = AegisClient(
        endpoint="http://aegis.test",
        api_key="bench",
        http_client=httpx.Client(transport=httpx.MockTransport(_fixed_decision)),
        retries=0,
    )
    samples: dict[str, list[int]] = {"off": [], "on": []}
    clock = time.perf_counter_ns
    for block in range(calls // 100):
        mode = "on" if block % 2 else "off"
        with _provider(mode == "on"):
            for _ in range(100):
                t0 = clock()
                client.propose(actor=doc["actor"], action=doc["action"], context=doc["context"])
                samples[mode].append(clock() - t0)
    client.close()
    out: dict[str, Any] = {mode: summary_us(values) for mode, values in samples.items()}
    out["ratio_p50_on_over_off"] = ratio(out["on"]["p50_us"], out["off"]["p50_us"])
    out["added_p50_us_on"] = round(out["on"]["p50_us"] - out["off"]["p50_us"], 2)
    return out


# -- the server ------------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stub: takes every export, counts requests and bytes, answers 200."""

    received: ClassVar[dict[str, int]] = {"requests": 0, "bytes": 0}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        with self.lock:
            self.received["requests"] += 1
            self.received["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def _server_point(db_url: str, tmp: Path, body: bytes, duration: float, env: dict[str, str]) -> dict[str, Any]:
    with aegis_server(db_url, tmp, **env) as (base, auth, _proc):
        url = base + PROPOSE
        loadgen.closed_loop(url, body, auth, 4, 1.0)  # warm
        return loadgen.closed_loop(url, body, auth, 32, duration, headers={"traceparent": _TRACEPARENT})


def run_server(duration: float) -> dict[str, Any]:
    body = json.dumps(server_proposal()).encode()
    out: dict[str, Any] = {"connections": 32, "duration_s_per_point": duration}
    with tempfile.TemporaryDirectory(prefix="aegis-bench-otel-") as tmpdir, _collector() as endpoint:
        tmp = Path(tmpdir)
        modes = {
            "off": {},
            "on_sampled": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint},
            "on_not_sampled": {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0",
            },
        }
        for mode, env in modes.items():
            db_url = f"sqlite+aiosqlite:///{tmp / f'{mode}.db'}"
            out[mode] = _server_point(db_url, tmp, body, duration, env)
        out["collector_received"] = dict(_Collector.received)
    off = out["off"]["rps"]
    for mode in ("on_sampled", "on_not_sampled"):
        out[f"ratio_rps_{mode}_over_off"] = ratio(out[mode]["rps"], off)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    return {"sdk": run_sdk(2_000 if quick else 10_000), "server": run_server(3.0 if quick else 6.0)}


if __name__ == "__main__":
    started = time.time()
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
    print(f"took {time.time() - started:.0f} s", file=sys.stderr)
