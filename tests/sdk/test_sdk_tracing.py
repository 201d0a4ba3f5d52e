"""The SDK's OpenTelemetry: one CLIENT span per public call, W3C context on every attempt, nothing sensitive."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aegis_sdk import APIConnectionError, PermissionDeniedError
from aegis_sdk.testing import FakePlatform

ACTOR = {"id": "agent-7", "type": "ai-agent"}
CANARY = "canary-5e1f0c"


def action(capability: str = "db.query", **parameters: Any) -> dict[str, Any]:
    return {"capability": capability, "parameters": parameters or {"query": "SELECT 1"}}


def span_named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


def traceparent_ids(header: str) -> tuple[int, int]:
    _version, trace_id, span_id, _flags = header.split("-")
    return int(trace_id, 16), int(span_id, 16)


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"])
def test_propose_span_carries_the_decision_and_the_request_carries_its_context(
    otel_spans: InMemorySpanExporter, outcome: str
) -> None:
    fake = FakePlatform()
    fake.script("db.query", outcome, risk_score=0.4, policy_ids=["p/1", "p/2"])
    with trace.get_tracer("test").start_as_current_span("app") as app, fake.client() as aegis:
        decision = aegis.propose(ACTOR, action())

    span = span_named(otel_spans, "aegis.propose")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id
    assert span.context.trace_id == app.get_span_context().trace_id
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "aegis_sdk"
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "server.address": "aegis.test",
        "server.port": 80,
        "aegis.capability": "db.query",
        "http.response.status_code": 200,
        "aegis.decision.id": decision.decision_id,
        "aegis.decision.outcome": outcome,
        "aegis.policy.ids": ("p/1", "p/2"),
        "aegis.risk.score": 0.4,
    }
    (request,) = fake.requests
    assert traceparent_ids(request.headers["traceparent"]) == (span.context.trace_id, span.context.span_id)


def test_every_retry_attempt_carries_the_calls_context(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_next(503, times=2)
    with fake.client(retries=3) as aegis:
        aegis.propose(ACTOR, action())
    span = span_named(otel_spans, "aegis.propose")
    assert [r.status_code for r in fake.requests] == [503, 503, 200]
    for request in fake.requests:
        assert traceparent_ids(request.headers["traceparent"]) == (span.context.trace_id, span.context.span_id)
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200


def test_an_unreachable_platform_ends_the_span_with_error_and_its_class(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=2)
    with fake.client(retries=1) as aegis, pytest.raises(APIConnectionError):
        aegis.propose(ACTOR, action())
    span = span_named(otel_spans, "aegis.propose")
    assert span.status.status_code is StatusCode.ERROR and span.status.description is None
    assert span.attributes is not None and span.attributes["error.type"] == "APIConnectionError"
    assert span.events == ()  # no exception event: its message could quote values


def test_an_api_error_names_its_code(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_next(403, code="insufficient_scope")
    with fake.client() as aegis, pytest.raises(PermissionDeniedError):
        aegis.capabilities.list()
    span = span_named(otel_spans, "aegis.list_capabilities")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "insufficient_scope"
    assert span.attributes["http.response.status_code"] == 403


def test_report_execution_and_resources_are_spans_named_for_the_call(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    with fake.client() as aegis:
        decision = aegis.propose(ACTOR, action())
        aegis.decisions.report_execution(decision.decision_id, status="SUCCESS", result={"rows": 1})
        aegis.decisions.get(decision.decision_id)
        list(aegis.decisions.list())
        aegis.capabilities.list()
        aegis.health()
    names = [s.name for s in otel_spans.get_finished_spans()]
    assert names == [
        "aegis.propose",
        "aegis.report_execution",
        "aegis.get_decision",
        "aegis.list_decisions",
        "aegis.list_capabilities",
        "aegis.health",
    ]
    report = span_named(otel_spans, "aegis.report_execution")
    assert report.attributes is not None
    assert report.attributes["aegis.execution.status"] == "SUCCESS"
    assert report.attributes["aegis.decision.id"] == decision.decision_id
    got = span_named(otel_spans, "aegis.get_decision")
    assert got.attributes is not None and got.attributes["aegis.decision.outcome"] == "ALLOW"


def test_wait_for_review_is_one_span_over_the_whole_wait(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "ESCALATE")
    with fake.client() as aegis:
        escalated = aegis.propose(ACTOR, action("payments.refund"))
        fake.approve(escalated.decision_id)
        otel_spans.clear()
        final = aegis.wait_for_review(escalated, timeout=5)
    (span,) = otel_spans.get_finished_spans()
    assert span.name == "aegis.wait_for_review"
    assert span.attributes is not None
    assert span.attributes["aegis.decision.outcome"] == final.outcome == "ALLOW"
    assert span.attributes["aegis.capability"] == "payments.refund"
    posts = [r for r in fake.requests if r.method == "POST"]
    assert traceparent_ids(posts[-1].headers["traceparent"]) == (span.context.trace_id, span.context.span_id)


async def test_async_client_spans_and_injects_like_the_sync_one(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.script("db.query", "DENY")
    with trace.get_tracer("test").start_as_current_span("app") as app:
        async with fake.async_client() as aegis:
            decision = await aegis.propose(ACTOR, action())
            await aegis.decisions.get(decision.decision_id)
    propose = span_named(otel_spans, "aegis.propose")
    assert propose.parent is not None and propose.parent.span_id == app.get_span_context().span_id
    assert propose.attributes is not None and propose.attributes["aegis.decision.outcome"] == "DENY"
    first = fake.requests[0]
    assert traceparent_ids(first.headers["traceparent"]) == (propose.context.trace_id, propose.context.span_id)
    got = span_named(otel_spans, "aegis.get_decision")
    assert got.attributes is not None and got.attributes["aegis.decision.id"] == decision.decision_id


def test_no_value_token_or_key_reaches_any_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform(api_key=f"aegis_sk_{CANARY}_key")
    fake.script("payments.refund", "REQUIRE_CONFIRMATION", reason=f"amount {CANARY} is high")
    with fake.client() as aegis:
        pending = aegis.propose(ACTOR, action("payments.refund", amount=CANARY, note=CANARY))
        confirmed = aegis.confirm(pending)
        aegis.decisions.report_execution(
            confirmed.decision_id, status="FAILED", error={"code": "boom", "message": CANARY}
        )
    assert pending.confirmation_token
    secrets = [CANARY, pending.confirmation_token, "agent-7"]
    spans = otel_spans.get_finished_spans()
    assert [s.name for s in spans] == ["aegis.propose", "aegis.confirm", "aegis.report_execution"]
    for span in spans:
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        for event in span.events:
            texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
        for text in texts:
            assert not any(secret in text for secret in secrets), (span.name, text)


def test_without_a_provider_nothing_is_traced_or_sent() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    fake = FakePlatform()
    with fake.client() as aegis:
        decision = aegis.propose(ACTOR, action())
    assert decision.outcome == "ALLOW"
    (request,) = fake.requests
    assert "traceparent" not in request.headers
    assert not trace.get_current_span().get_span_context().is_valid
