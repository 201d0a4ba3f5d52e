"""`aegis-server serve`'s tracing set-up from OTEL_* variables: when it is asked for, which exporters, the
resource, and the errors users see; OTLP checked against a collector this test runs on loopback."""

from __future__ import annotations

import http.server
import io
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aegis_server.cli import main
from aegis_server.inprocess import InProcessServer
from aegis_server.observability.otel_setup import OtelSetupError, configure_tracing


def _reset_global_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def clean_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable from the machine, and no global TracerProvider left behind by the test."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    _reset_global_tracer_provider()
    try:
        yield
    finally:
        _reset_global_tracer_provider()


pytestmark = pytest.mark.usefixtures("clean_tracing")

POLICIES = Path(__file__).parents[1] / "api" / "policies.yaml"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
BODY = {
    "actor": {"id": "agent-1", "type": "ai-agent"},
    "action": {"capability": "database.query", "parameters": {"query": "SELECT 'hunter2'"}},
}


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every decoded export request it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ExportTraceServiceRequest, dict[str, str]]] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append((self.path, request, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) of everything received."""
        found = []
        for _, request, _ in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((attrs.get("service.name", ""), span) for span in scope_spans.spans)
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    running.thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


def test_nothing_is_configured_unless_asked() -> None:
    assert configure_tracing({}) is None
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert configure_tracing({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is None
    assert configure_tracing({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_console_exporter_writes_the_servers_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "governance-eu")
    out = io.StringIO()
    setup = configure_tracing(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "governance-eu"}, console_out=out
    )
    assert setup is not None and setup.describe() == "traces are exported to: console"
    async with InProcessServer([POLICIES], run_background_tasks=False) as server:
        response = await server.async_http_client().post(
            "/api/v1/governance/propose", json=BODY, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
    setup.shutdown()
    printed = out.getvalue()
    assert '"name": "POST /api/v1/governance/propose"' in printed
    assert '"name": "aegis.evaluate"' in printed and '"name": "aegis.commit"' in printed
    assert f'"trace_id": "0x{TRACE_ID}"' in printed
    assert '"service.name": "governance-eu"' in printed
    assert "hunter2" not in printed


async def test_otlp_exports_to_the_collector(collector: Collector) -> None:
    setup = configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})  # otlp, by the endpoint alone
    assert setup is not None
    assert setup.describe() == f"traces are exported to: otlp ({collector.url}/v1/traces)"
    async with InProcessServer([POLICIES], run_background_tasks=False) as server:
        response = await server.async_http_client().post(
            "/api/v1/governance/propose", json=BODY, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
    setup.shutdown()  # flushes the batch
    assert {path for path, _, _ in collector.requests} == {"/v1/traces"}
    spans = collector.spans()
    assert {span.name for _, span in spans} == {
        "POST /api/v1/governance/propose",
        "aegis.evaluate",
        "aegis.commit",
        "aegis.answer",
    }
    assert {span.trace_id.hex() for _, span in spans} == {TRACE_ID}
    assert {service for service, _ in spans} == {"aegis-server"}
    assert b"hunter2" not in b"".join(r.SerializeToString() for _, r, _ in collector.requests)


def test_otlp_traces_endpoint_and_several_exporters(collector: Collector) -> None:
    out = io.StringIO()
    env = {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url + "/custom"}
    setup = configure_tracing(env, console_out=out)
    assert setup is not None
    with trace.get_tracer("test").start_as_current_span("one"):
        pass
    setup.shutdown()
    assert [path for path, _, _ in collector.requests] == ["/custom"]
    assert [span.name for _, span in collector.spans()] == ["one"]
    assert json.loads(out.getvalue())["name"] == "one"


def test_an_endpoints_credentials_are_not_logged() -> None:
    setup = configure_tracing(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:pw@collector.example:4318/v1/traces?k=s"}
    )
    assert setup is not None
    assert setup.describe() == "traces are exported to: otlp (https://collector.example:4318/v1/traces)"
    setup.provider.shutdown = lambda: None  # nothing to flush; do not try to reach the example host


def test_errors_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OtelSetupError, match=r"unknown trace exporter 'zipkin-nope'.*otlp, console or none"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin-nope"})
    with pytest.raises(OtelSetupError, match="http/protobuf"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # the `otel` extra not installed
    with pytest.raises(OtelSetupError, match=r"pip install 'aegisgov-server\[otel\]'"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_serve_refuses_to_start_with_an_unknown_exporter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger-thrift-nope")
    code = main(["serve", "--db", f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", "--policy", str(POLICIES)])
    assert code == 2
    assert "cannot set up tracing: unknown trace exporter 'jaeger-thrift-nope'" in capsys.readouterr().err
