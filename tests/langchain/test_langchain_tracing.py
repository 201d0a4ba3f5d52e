"""aegis-langchain's span: one `aegis.govern` per governed tool call, inside the span the app has open, parent
of the SDK's spans and of the tool's own run; sync and async, governed tools and the agents middleware, and
parallel tool calls in a LangGraph agent without cross-talk. Runs against the SDK's fake (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool, tool
from lc_support import calls, scripted
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aegis_langchain import ActionDenied, GovernanceMiddleware, GovernanceUnavailable, governed_tool
from aegis_sdk.testing import FakePlatform

CANARY = "canary-90ab"


def tracer() -> trace.Tracer:
    # Not a module-level tracer: a proxy tracer keeps the provider of the first test that used it.
    return trace.get_tracer("test-app")


def by_id(exporter: InMemorySpanExporter) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in exporter.get_finished_spans()}


def parent_of(spans: dict[int, ReadableSpan], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None, span.name
    return spans[span.parent.span_id]


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def ancestors(spans: dict[int, ReadableSpan], span: ReadableSpan) -> list[str]:
    names = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        names.append(span.name)
    return names


def assert_no_canary(exporter: InMemorySpanExporter, *secrets: str) -> None:
    for span in exporter.get_finished_spans():
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        texts += [str(v) for event in span.events for v in [event.name, *(event.attributes or {}).values()]]
        assert not any(secret in text for text in texts for secret in secrets), span.name


def test_a_sync_tool_governs_inside_the_apps_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    with fake.client() as aegis:

        @governed_tool("files.delete", client=aegis, actor="agent-7")
        def delete(path: str) -> str:
            """Delete a file."""
            with tracer().start_as_current_span("tool body"):
                return "deleted"

        with tracer().start_as_current_span("app") as app:
            assert delete.invoke({"path": f"/tmp/{CANARY}"}) == "deleted"
    spans = by_id(otel_spans)
    (govern,) = named(otel_spans, "aegis.govern")
    assert govern.kind is SpanKind.INTERNAL
    assert govern.instrumentation_scope is not None and govern.instrumentation_scope.name == "aegis_langchain"
    assert parent_of(spans, govern).context.span_id == app.get_span_context().span_id
    for child in ("aegis.propose", "tool body"):
        (span,) = named(otel_spans, child)
        assert parent_of(spans, span) is govern, child
    # The execution report left the call's path: the client's reporter sent it in its own trace, at close.
    assert not named(otel_spans, "aegis.report_execution")
    (batch,) = named(otel_spans, "aegis.report_executions")
    assert batch.parent is None
    (propose,) = named(otel_spans, "aegis.propose")
    assert govern.status.status_code is StatusCode.UNSET
    assert dict(govern.attributes or {}) == {
        "aegis.adapter": "langchain",
        "aegis.capability": "files.delete",
        "aegis.tool.name": "delete",
        "aegis.decision.id": (propose.attributes or {})["aegis.decision.id"],
        "aegis.decision.outcome": "ALLOW",
    }
    assert_no_canary(otel_spans, CANARY, "agent-7")


async def test_an_async_refusal_is_an_answer_not_an_error(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.script("files.delete", "DENY", reason=f"never {CANARY}")
    async with fake.async_client() as aegis:

        @governed_tool("files.delete", async_client=aegis, handle_tool_error=False)
        async def delete(path: str) -> str:
            """Delete a file."""
            return "deleted"

        with tracer().start_as_current_span("app") as app, pytest.raises(ActionDenied):
            await delete.ainvoke({"path": CANARY})
    spans = by_id(otel_spans)
    (govern,) = named(otel_spans, "aegis.govern")
    assert parent_of(spans, govern).context.span_id == app.get_span_context().span_id
    assert govern.status.status_code is StatusCode.UNSET
    assert (govern.attributes or {})["aegis.decision.outcome"] == "DENY"
    (propose,) = named(otel_spans, "aegis.propose")
    assert parent_of(spans, propose) is govern
    assert_no_canary(otel_spans, CANARY)


def test_an_unreachable_platform_fails_the_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=5)
    with fake.client(retries=0) as aegis:

        @governed_tool("email.send", client=aegis, handle_tool_error=False)
        def send(to: str) -> str:
            """Send."""
            return "sent"

        with pytest.raises(GovernanceUnavailable):
            send.invoke({"to": CANARY})
    (govern,) = named(otel_spans, "aegis.govern")
    assert govern.status.status_code is StatusCode.ERROR and govern.status.description is None
    assert (govern.attributes or {})["error.type"] == "APIConnectionError"
    assert "aegis.decision.outcome" not in (govern.attributes or {})


def _agent_tools(record: list[str], *, native_async: bool) -> list[Any]:
    """Two sync tools (run in executor threads by an async agent) and one async tool (sync in a sync agent)."""

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        with tracer().start_as_current_span("tool lookup"):
            record.append("lookup")
            return "found"

    @tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        with tracer().start_as_current_span("tool refund"):
            record.append("refund")
            return "refunded"

    def notify_now(to: str) -> str:
        with tracer().start_as_current_span("tool notify"):
            record.append("notify")
            return "notified"

    async def notify_later(to: str) -> str:
        return notify_now(to)

    notify = StructuredTool.from_function(
        func=None if native_async else notify_now,
        coroutine=notify_later if native_async else None,
        name="notify",
        description="Notify someone.",
    )
    return [lookup, refund, notify]


def _assert_parallel_calls_nest(otel_spans: InMemorySpanExporter, app_span_id: int, tools: list[str]) -> None:
    spans = by_id(otel_spans)
    governs = named(otel_spans, "aegis.govern")
    assert sorted((g.attributes or {})["aegis.tool.name"] for g in governs) == sorted(tools)
    for govern in governs:
        tool_name = (govern.attributes or {})["aegis.tool.name"]
        assert "app" in ancestors(spans, govern)
        assert app_span_id in [s.context.span_id for s in spans.values() if s.name == "app"]
        assert not any(name.startswith("aegis.") for name in ancestors(spans, govern))
        children = [s for s in spans.values() if s.parent is not None and s.parent.span_id == govern.context.span_id]
        assert sorted(c.name for c in children) == sorted(["aegis.propose", f"tool {tool_name}"]), tool_name
        (propose,) = [c for c in children if c.name == "aegis.propose"]
        assert (propose.attributes or {})["aegis.capability"] == f"agent.{tool_name}"
        assert (govern.attributes or {})["aegis.decision.id"] == (propose.attributes or {})["aegis.decision.id"]
    # The three execution reports went in the background (batched: one or more batches), outside the app's trace.
    batches = named(otel_spans, "aegis.report_executions")
    assert batches and all(batch.parent is None for batch in batches)


def _parallel_turn() -> Any:
    return scripted(
        calls(("lookup", {"key": CANARY}), ("refund", {"order_id": CANARY}), ("notify", {"to": CANARY})),
        AIMessage(content="done"),
    )


def test_parallel_tool_calls_in_an_agent_each_nest_under_their_own_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    ran: list[str] = []
    with fake.client() as aegis:
        middleware = GovernanceMiddleware(lambda name: f"agent.{name}", client=aegis)
        agent = create_agent(_parallel_turn(), _agent_tools(ran, native_async=False), middleware=[middleware])
        with tracer().start_as_current_span("app") as app:
            agent.invoke({"messages": [("user", "go")]})
    assert sorted(ran) == ["lookup", "notify", "refund"]
    _assert_parallel_calls_nest(otel_spans, app.get_span_context().span_id, ["lookup", "refund", "notify"])
    assert_no_canary(otel_spans, CANARY)


async def test_parallel_tool_calls_in_an_async_agent(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    ran: list[str] = []
    async with fake.async_client() as aegis:
        middleware = GovernanceMiddleware(lambda name: f"agent.{name}", async_client=aegis)
        agent = create_agent(_parallel_turn(), _agent_tools(ran, native_async=True), middleware=[middleware])
        with tracer().start_as_current_span("app") as app:
            await agent.ainvoke({"messages": [("user", "go")]})
    assert sorted(ran) == ["lookup", "notify", "refund"]
    _assert_parallel_calls_nest(otel_spans, app.get_span_context().span_id, ["lookup", "refund", "notify"])


def test_without_a_provider_no_context_is_sent() -> None:
    fake = FakePlatform()
    with fake.client() as aegis:

        @governed_tool("files.delete", client=aegis)
        def delete(path: str) -> str:
            """Delete a file."""
            return "deleted"

        assert delete.invoke({"path": "/tmp/x"}) == "deleted"
    assert fake.requests and all("traceparent" not in r.headers for r in fake.requests)
