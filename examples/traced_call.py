"""One trace from the agent's call to the commit: what a governed call looks like in your tracing backend.

    uv run python examples/traced_call.py

It runs, on loopback only:

- a stand-in for an OpenTelemetry Collector: an OTLP/HTTP receiver that decodes what it is sent;
- `aegis-server serve` (SQLite in a temporary folder, the example policies), which exports its spans there
  because `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` says so (`aegisgov-server[otel]` installs the exporter);
- an "application" that configured the OpenTelemetry SDK to export to the same receiver, and proposes four
  actions with the AEGIS SDK inside its own span: one ALLOW, one DENY, one REQUIRE_CONFIRMATION (confirmed
  with its token: a second proposal) and one ESCALATE.

Then it prints the span tree the receiver got: ONE trace, the application's span at the root, the SDK's
CLIENT spans under it, and under each the server's span with its `aegis.evaluate`, `aegis.commit` and
`aegis.answer` steps, with their attributes. docs/observability.md shows this output;
tests/docs/test_traced_call.py runs this script and checks it.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from aegis_sdk import AegisClient

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "policies"
AGENT = {"id": "support-bot-7", "type": "ai-agent"}
REFUND = "payments.refund"
SCOPES = "governance:propose,governance:read"
# The attributes printed, under a short label (docs/observability.md lists them all).
SHOWN = {
    "aegis.decision.outcome": "outcome",
    "aegis.capability": "capability",
    "aegis.policy.ids": "policies",
    "aegis.risk.score": "risk",
    "http.response.status_code": "status",
}


class Receiver:
    """The collector stand-in: every span of every OTLP/HTTP export request, as (service name, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        spans, lock = self.spans, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    for resource_spans in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            spans.extend((resource.get("service.name", "?"), s) for s in scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str) -> str:
    from aegis_server.cli import main as aegis_server

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = aegis_server(list(args))
    if code != 0:
        raise SystemExit(f"aegis-server {args[0]} exited {code}: {err.getvalue()}")
    return out.getvalue().strip()


@contextlib.contextmanager
def aegis_server(db_url: str, traces_endpoint: str) -> Iterator[str]:
    """`aegis-server serve`, exporting its spans over OTLP/HTTP; stopped (and so flushed) when the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_endpoint,
        "OTEL_SERVICE_NAME": "aegis-server",
        "AEGIS_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(POLICIES)]
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("aegis-server did not start")
            time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()  # a graceful stop: serve flushes its span exporter
        server.wait(timeout=20)


def the_application(endpoint: str, api_key: str, traces_endpoint: str) -> None:
    """An app with its own tracing: proposes four actions inside its span `handle support ticket`."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-desk"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint)))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("support-desk")
    with (
        tracer.start_as_current_span("handle support ticket"),
        AegisClient(endpoint=endpoint, api_key=api_key) as aegis,
    ):
        query = {"query": "SELECT id, email FROM users WHERE id = 42", "database": "production"}
        aegis.propose(actor=AGENT, action={"capability": "database.query", "parameters": query})
        aegis.propose(
            actor=AGENT, action={"capability": "database.query", "parameters": {**query, "query": "DROP TABLE users"}}
        )
        refund = {"order_id": "ord_7", "amount": 400, "currency": "EUR"}
        asked = aegis.propose(actor=AGENT, action={"capability": REFUND, "parameters": refund})
        aegis.confirm(asked)
        aegis.propose(actor=AGENT, action={"capability": REFUND, "parameters": {**refund, "amount": 2500}})
    provider.shutdown()  # exports what is left


def attribute_text(span: Any) -> str:
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            values[attribute.key] = ",".join(v.string_value for v in value.array_value.values)
        else:
            values[attribute.key] = getattr(value, kind)
    return " ".join(f"{label}={values[key]}" for key, label in SHOWN.items() if key in values)


def print_tree(spans: list[tuple[str, Any]]) -> None:
    traces = {span.trace_id.hex() for _, span in spans}
    print(f"{len(spans)} spans in {len(traces)} trace: {', '.join(sorted(traces))}")
    by_parent: dict[bytes, list[tuple[str, Any]]] = {}
    ids = {span.span_id for _, span in spans}
    for service, span in spans:
        by_parent.setdefault(span.parent_span_id if span.parent_span_id in ids else b"", []).append((service, span))

    def show(parent: bytes, prefix: str) -> None:
        children = sorted(by_parent.get(parent, []), key=lambda item: item[1].start_time_unix_nano)
        for index, (service, span) in enumerate(children):
            last = index == len(children) - 1
            branch = "" if parent == b"" else ("└─ " if last else "├─ ")
            millis = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
            print(f"{prefix}{branch}{span.name}  [{service}, {millis:.1f} ms]  {attribute_text(span)}".rstrip())
            show(span.span_id, prefix + ("" if parent == b"" else ("   " if last else "│  ")))

    show(b"", "")


def run() -> tuple[list[tuple[str, Any]], str]:
    """Everything above; returns what the receiver got and the application's API key."""
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="aegis-trace-") as folder:
        db_url = f"sqlite+aiosqlite:///{Path(folder) / 'aegis.db'}"
        created = cli("keys", "create", "--db", db_url, "--name", "support-desk", "--scopes", SCOPES, "--actors", "*")
        key = created.split()[-1]
        with aegis_server(db_url, receiver.endpoint) as endpoint:
            the_application(endpoint, key, receiver.endpoint)
    return receiver.spans, key


def main() -> int:
    spans, _ = run()
    # The application's trace (the readiness checks above made traces of their own on the server).
    ours = {span.trace_id for service, span in spans if service == "support-desk"}
    print_tree([(service, span) for service, span in spans if span.trace_id in ours])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
