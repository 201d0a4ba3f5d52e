"""aegis-fastapi's span: `aegis.govern` inside the app's own request span, parent of the SDK's spans, for the
dependency and the middleware forms of an app built from APIRouters."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi_support import ALICE, BOT, asgi_client, build_router_app, current_actor
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from aegis_fastapi import Aegis
from aegis_sdk.testing import FakePlatform

REFUND = {"amount": 10, "currency": "EUR", "note": "canary-77f3"}
SHOP = {"POST /v1/shop/orders/{order_id}/refunds": "payments.refund"}


class AppSpan:
    """The app's own tracing, as an instrumentation would do it: a SERVER span around every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with trace.get_tracer("test-app").start_as_current_span("app request", kind=SpanKind.SERVER):
            await self.app(scope, receive, send)


def traced_app(fake: FakePlatform, routes: dict[str, Any] | None = None, **options: Any) -> FastAPI:
    aegis = Aegis(actor=current_actor, client=fake.async_client(retries=0), **options)
    app = build_router_app(aegis, routes)
    app.add_middleware(AppSpan)
    return app


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]
    return by_name


def ancestors(spans: dict[str, ReadableSpan], span: ReadableSpan) -> list[str]:
    by_id = {s.context.span_id: s for s in spans.values()}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def assert_nested(spans: dict[str, ReadableSpan]) -> ReadableSpan:
    """`aegis.govern` under the app's span (FastAPI's own spans, when it makes them, may sit between), and the
    SDK's proposal under `aegis.govern`."""
    app, govern = spans["app request"], spans["aegis.govern"]
    assert govern.kind is SpanKind.INTERNAL
    assert govern.instrumentation_scope is not None and govern.instrumentation_scope.name == "aegis_fastapi"
    assert "app request" in ancestors(spans, govern)
    assert not any(name.startswith("aegis.") for name in ancestors(spans, govern))
    assert govern.context.trace_id == app.context.trace_id
    propose = spans["aegis.propose"]
    assert propose.parent is not None and propose.parent.span_id == govern.context.span_id
    return govern


async def test_the_dependency_governs_inside_the_apps_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    app = traced_app(fake)
    async with asgi_client(app) as http:
        response = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 200, response.text
    spans = spans_by_name(otel_spans)
    govern = assert_nested(spans)
    assert govern.status.status_code is StatusCode.UNSET
    assert dict(govern.attributes or {}) == {
        "aegis.adapter": "fastapi",
        "aegis.capability": "payments.refund",
        "http.route": "/v1/orders/{order_id}/refunds",
        "aegis.decision.id": response.json()["decision_id"],
        "aegis.decision.outcome": "ALLOW",
    }
    ours = [s for s in otel_spans.get_finished_spans() if s.instrumentation_scope.name.startswith("aegis_")]
    assert {"aegis.govern", "aegis.propose"} <= {s.name for s in ours}
    for span in ours:  # (FastAPI's own server span records the URL path: the app's choice)
        for value in (span.attributes or {}).values():
            assert "canary-77f3" not in str(value) and "A-1" not in str(value)


async def test_the_middleware_governs_inside_the_apps_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "DENY")
    app = traced_app(fake, SHOP)
    async with asgi_client(app) as http:
        response = await http.post("/v1/shop/orders/A-1/refunds", json=REFUND, headers=ALICE)
    assert response.status_code == 403
    govern = assert_nested(spans_by_name(otel_spans))
    assert govern.status.status_code is StatusCode.UNSET  # a refusal is a correct answer
    assert govern.attributes is not None
    assert govern.attributes["aegis.decision.outcome"] == "DENY"
    assert govern.attributes["http.route"] == "/v1/shop/orders/{order_id}/refunds"


@pytest.mark.parametrize("outcome", ["REQUIRE_CONFIRMATION", "ESCALATE"])
async def test_a_pending_outcome_is_an_answer_too(otel_spans: InMemorySpanExporter, outcome: str) -> None:
    fake = FakePlatform()
    fake.script("payments.refund", outcome)
    async with asgi_client(traced_app(fake)) as http:
        response = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code != 200, response.text
    govern = assert_nested(spans_by_name(otel_spans))
    assert govern.status.status_code is StatusCode.UNSET
    assert govern.attributes is not None and govern.attributes["aegis.decision.outcome"] == outcome


async def test_an_unreachable_platform_fails_the_span(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error()
    async with asgi_client(traced_app(fake)) as http:
        response = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 503
    spans = spans_by_name(otel_spans)
    govern = assert_nested(spans)
    assert govern.status.status_code is StatusCode.ERROR
    assert govern.attributes is not None and govern.attributes["error.type"] == "APIConnectionError"
    assert "aegis.decision.outcome" not in govern.attributes
    assert spans["aegis.propose"].status.status_code is StatusCode.ERROR


async def test_fail_open_marks_the_span_degraded(otel_spans: InMemorySpanExporter) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error()
    async with asgi_client(traced_app(fake, fail_open=True)) as http:
        response = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 200
    spans = spans_by_name(otel_spans)
    govern = assert_nested(spans)
    assert govern.attributes is not None
    assert govern.attributes["aegis.degraded"] is True
    assert govern.attributes["aegis.decision.outcome"] == "ALLOW"
    assert spans["aegis.propose"].attributes is not None
    assert spans["aegis.propose"].attributes["error.type"] == "APIConnectionError"


async def test_without_a_provider_no_context_is_sent() -> None:
    fake = FakePlatform()
    async with asgi_client(traced_app(fake)) as http:
        response = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 200
    assert all("traceparent" not in request.headers for request in fake.requests)
