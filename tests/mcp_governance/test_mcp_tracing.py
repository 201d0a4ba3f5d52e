"""GovernanceMiddleware's span: `aegis.govern` per governed tools/call, nested under the span the MCP SDK opens
for the request (itself under the caller's span), and parent of the SDK's spans. Against the SDK's fake."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import pytest
from mcp import Client
from mw_support import MODES, governed, meta_of, text_of
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aegis_sdk.testing import FakePlatform

CANARY = "canary-3c9d"
MCP_SPANS = importlib.util.find_spec("mcp.shared._otel") is not None  # the MCP SDK traces its requests (2.x)


@pytest.fixture
def spans(otel_spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """`otel_spans`, and the MCP SDK's module-level tracer pointed at this test's provider (a proxy tracer keeps
    the provider it first met; an application sets its provider once, so only tests need this)."""
    if MCP_SPANS:
        monkeypatch.setattr(importlib.import_module("mcp.shared._otel"), "_tracer", trace.get_tracer("mcp-python-sdk"))
    return otel_spans


def by_id(exporter: InMemorySpanExporter) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in exporter.get_finished_spans()}


def chain(spans: dict[int, ReadableSpan], span: ReadableSpan) -> list[str]:
    names = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        names.append(span.name)
    return names


def the(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(found) == 1, [span.name for span in exporter.get_finished_spans()]
    return found[0]


@pytest.mark.parametrize("mode", MODES)
async def test_allow_nests_under_the_mcp_request_span(spans: InMemorySpanExporter, mode: Any) -> None:
    fake = FakePlatform()
    made = governed(fake.async_client())
    with trace.get_tracer("test-app").start_as_current_span("app"):
        async with Client(made.server, mode=mode) as client:
            result = await client.call_tool("add", {"a": 2, "b": 3})
    assert text_of(result) == "5"
    by = by_id(spans)
    govern = the(spans, "aegis.govern")
    assert govern.kind is SpanKind.INTERNAL
    assert govern.instrumentation_scope is not None and govern.instrumentation_scope.name == "aegis_mcp"
    if MCP_SPANS:
        assert chain(by, govern)[0] == "tools/call add"  # the MCP SDK's server span for this request
    assert "app" in chain(by, govern)
    assert chain(by, the(spans, "aegis.propose"))[0] == "aegis.govern"
    # The execution report is only queued in the call: the client's reporter sends it in a trace of its own.
    assert not [span for span in spans.get_finished_spans() if span.name == "aegis.report_execution"]
    assert await made.governance.client.flush_reports()
    assert the(spans, "aegis.report_executions").parent is None
    assert govern.status.status_code is StatusCode.UNSET
    assert dict(govern.attributes or {}) == {
        "aegis.adapter": "mcp",
        "aegis.tool.name": "add",
        "aegis.capability": "mcp.add",
        "aegis.decision.id": meta_of(result)["decision_id"],
        "aegis.decision.outcome": "ALLOW",
    }


async def test_deny_is_an_answer_and_nothing_sensitive_is_recorded(spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.script("mcp.echo", "DENY", reason=f"no {CANARY}")
    made = governed(fake.async_client())
    async with Client(made.server) as client:
        result = await client.call_tool("echo", {"text": CANARY})
    assert result.is_error and made.ran == []
    govern = the(spans, "aegis.govern")
    assert govern.status.status_code is StatusCode.UNSET
    assert (govern.attributes or {})["aegis.decision.outcome"] == "DENY"
    secrets = [CANARY, made.actor]
    for span in spans.get_finished_spans():
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        texts += [str(v) for event in span.events for v in [event.name, *(event.attributes or {}).values()]]
        assert not any(secret in text for text in texts for secret in secrets), span.name


async def test_an_unreachable_platform_fails_the_span(spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=5)
    made = governed(fake.async_client(retries=0))
    async with Client(made.server) as client:
        result = await client.call_tool("add", {"a": 1, "b": 1})
    assert result.is_error and made.ran == []
    govern = the(spans, "aegis.govern")
    assert govern.status.status_code is StatusCode.ERROR
    assert (govern.attributes or {})["error.type"] == "APIConnectionError"


async def test_fail_open_marks_the_span_degraded(spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=5)
    made = governed(fake.async_client(retries=0), fail_open=True)
    async with Client(made.server) as client:
        result = await client.call_tool("add", {"a": 1, "b": 1})
    assert text_of(result) == "2"
    attributes = the(spans, "aegis.govern").attributes or {}
    assert attributes["aegis.degraded"] is True and attributes["aegis.decision.outcome"] == "ALLOW"
