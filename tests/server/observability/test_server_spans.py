"""The server's spans: one SERVER span per request continuing the caller's trace, and for a proposal the
children aegis.evaluate, aegis.commit and aegis.answer, with the decision's attributes and nothing sensitive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).parents[1] / "api" / "policies.yaml"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    async with InProcessServer(
        [POLICIES],
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}",
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
    ) as running:
        yield running


PROPOSE = "/api/v1/governance/propose"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def proposal(capability: str = "database.query", **parameters: Any) -> dict[str, Any]:
    return {
        "actor": {"id": "agent-secret-actor", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters or {"query": "SELECT 'hunter2'"}},
        "context": {"session_id": "sess-secret-session", "metadata": {"source": "tests"}},
    }


SECRETS = ("hunter2", "SELECT", "agent-secret-actor", "sess-secret-session", "aegis_sk_", "Bearer")


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def assert_nothing_sensitive(spans: tuple[ReadableSpan, ...], key: str) -> None:
    for span in spans:
        texts = [span.name, *(f"{k}={v}" for k, v in (span.attributes or {}).items())]
        texts += [event.name for event in span.events]
        for text in texts:
            for secret in (*SECRETS, key):
                assert secret not in text, (span.name, text)
        assert not span.events  # no recorded exceptions


async def test_a_proposal_continues_the_callers_trace(
    otel_spans: InMemorySpanExporter, server: InProcessServer
) -> None:
    client = server.async_http_client()
    response = await client.post(PROPOSE, json=proposal(), headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    decision = response.json()
    spans = otel_spans.get_finished_spans()
    named = by_name(spans)
    assert set(named) == {"POST /api/v1/governance/propose", "aegis.evaluate", "aegis.commit", "aegis.answer"}
    root = named["POST /api/v1/governance/propose"]
    assert root.kind is SpanKind.SERVER
    assert root.parent is not None and root.parent.is_remote and format(root.parent.span_id, "016x") == PARENT_ID
    for span in spans:
        assert format(span.context.trace_id, "032x") == TRACE_ID
    for child in ("aegis.evaluate", "aegis.commit", "aegis.answer"):
        assert named[child].parent is not None and named[child].parent.span_id == root.context.span_id
    expected: dict[str, Any] = {
        "aegis.decision.id": decision["decision_id"],
        "aegis.decision.outcome": "ALLOW",
        "aegis.capability": "database.query",
        "aegis.policy.ids": ("baseline/read",),
        "aegis.risk.score": decision["risk_score"],
        "aegis.policy.version": decision["policy_version"],
    }
    assert {k: v for k, v in (root.attributes or {}).items() if k in expected} == expected
    assert dict(named["aegis.evaluate"].attributes or {}) == expected
    assert root.attributes is not None
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["http.route"] == PROPOSE
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["aegis.request.id"] == response.headers["x-request-id"]
    assert root.status.status_code is StatusCode.UNSET
    # evaluate, then commit, then answer
    assert named["aegis.evaluate"].end_time <= named["aegis.commit"].start_time  # type: ignore[operator]
    assert named["aegis.commit"].end_time <= named["aegis.answer"].start_time  # type: ignore[operator]
    assert_nothing_sensitive(spans, server.api_key)


async def test_every_outcome_and_a_confirmation(otel_spans: InMemorySpanExporter, server: InProcessServer) -> None:
    client = server.async_http_client()
    bodies = {
        "DENY": proposal("database.drop", table="x"),
        "ESCALATE": proposal("payments.transfer", amount=5000),
        "REQUIRE_CONFIRMATION": proposal(query="SELECT 'hunter2'", database="production"),
    }
    for outcome, body in bodies.items():
        otel_spans.clear()
        response = await client.post(PROPOSE, json=body, headers={"traceparent": TRACEPARENT})
        assert response.json()["outcome"] == outcome
        named = by_name(otel_spans.get_finished_spans())
        assert named["aegis.evaluate"].attributes["aegis.decision.outcome"] == outcome  # type: ignore[index]
        assert named[f"POST {PROPOSE}"].attributes["aegis.decision.outcome"] == outcome  # type: ignore[index]
        assert_nothing_sensitive(otel_spans.get_finished_spans(), server.api_key)
    token = response.json()["confirmation_token"]
    otel_spans.clear()
    confirmed = await client.post(PROPOSE, json={**bodies["REQUIRE_CONFIRMATION"], "confirmation_token": token})
    assert confirmed.json()["outcome"] == "ALLOW"
    spans = otel_spans.get_finished_spans()
    named = by_name(spans)
    assert set(named) == {f"POST {PROPOSE}", "aegis.evaluate", "aegis.commit", "aegis.answer"}
    assert named["aegis.evaluate"].attributes["aegis.decision.id"] == confirmed.json()["decision_id"]  # type: ignore[index]
    assert_nothing_sensitive(spans, server.api_key)
    assert token[:20] not in str([dict(s.attributes or {}) for s in spans])


async def test_a_refusal_is_named_by_its_code_and_is_no_server_error(
    otel_spans: InMemorySpanExporter, server: InProcessServer
) -> None:
    client = server.async_http_client()
    response = await client.post(PROPOSE, json=proposal("no.such.capability"))
    assert response.status_code == 404
    named = by_name(otel_spans.get_finished_spans())
    root, evaluate = named[f"POST {PROPOSE}"], named["aegis.evaluate"]
    assert root.attributes is not None and evaluate.attributes is not None
    assert root.attributes["error.type"] == evaluate.attributes["error.type"] == "unknown_capability"
    assert root.attributes["http.response.status_code"] == 404
    assert root.status.status_code is StatusCode.UNSET and evaluate.status.status_code is StatusCode.UNSET
    assert "aegis.commit" not in named and "aegis.answer" not in named
    assert not root.events and not evaluate.events

    otel_spans.clear()
    missing_key = await server.async_http_client(api_key="aegis_sk_wrong").get("/api/v1/governance/decisions")
    assert missing_key.status_code == 401
    (span,) = otel_spans.get_finished_spans()
    assert span.name == "GET /api/v1/governance/decisions"
    assert span.attributes is not None and span.attributes["error.type"] == "invalid_api_key"
    assert "aegis_sk_wrong" not in str(dict(span.attributes))


async def test_a_server_error_sets_status_error(otel_spans: InMemorySpanExporter, server: InProcessServer) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom with a value: hunter2")

    server.service.propose = broken  # type: ignore[method-assign]
    response = await server.async_http_client().post(PROPOSE, json=proposal())
    assert response.status_code == 500
    (span,) = otel_spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and not span.status.description
    assert span.attributes is not None and span.attributes["error.type"] == "internal_error"
    assert not span.events


async def test_an_unmatched_path_is_named_by_its_method(
    otel_spans: InMemorySpanExporter, server: InProcessServer
) -> None:
    response = await server.async_http_client().get("/api/v1/nothing/here/123")
    assert response.status_code == 404
    (span,) = otel_spans.get_finished_spans()
    assert span.name == "GET"
    assert span.attributes is not None and "http.route" not in span.attributes
    assert span.attributes["error.type"] == "not_found"


async def test_no_provider_means_no_spans_and_no_extraction(server: InProcessServer, monkeypatch: Any) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("extract called while tracing is off")

    monkeypatch.setattr(TraceContextTextMapPropagator, "extract", fail)
    response = await server.async_http_client().post(PROPOSE, json=proposal(), headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    assert type(response).__name__ == "Response"


async def test_a_provider_set_after_start_is_used(server: InProcessServer, otel_spans: InMemorySpanExporter) -> None:
    # `server` started before `otel_spans` set the provider (fixture order): the check is live.
    response = await server.async_http_client().get("/api/v1/health")
    assert response.status_code == 200
    assert [s.name for s in otel_spans.get_finished_spans()] == ["GET /api/v1/health"]


async def test_a_proposal_refused_before_routing_is_named_by_its_route(
    otel_spans: InMemorySpanExporter, server: InProcessServer
) -> None:
    """The body guard refuses invalid JSON before the hot path puts the route in the scope."""
    response = await server.async_http_client().post(
        PROPOSE, content=b"{not json", headers={"Content-Type": "application/json", "traceparent": TRACEPARENT}
    )
    assert response.status_code == 400
    (span,) = otel_spans.get_finished_spans()
    assert span.name == f"POST {PROPOSE}"
    assert span.attributes is not None and span.attributes["http.route"] == PROPOSE
    assert span.attributes["error.type"] == response.json()["error"]["code"]


async def test_the_callers_baggage_is_never_read_nor_logged(
    otel_spans: InMemorySpanExporter, server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Only W3C trace context is continued: a (malformed, oversized) `baggage` header is neither parsed (the
    API's baggage propagator would log it verbatim, before any authentication) nor copied anywhere."""
    baggage = "user.email=alice@example.com;;,card=4111111111111111 x," + "k=" + "A" * 10_000
    with caplog.at_level("DEBUG"):
        response = await server.async_http_client().get(
            "/api/v1/health", headers={"traceparent": TRACEPARENT, "baggage": baggage}
        )
    assert response.status_code == 200
    assert "alice@example.com" not in caplog.text and "4111111111111111" not in caplog.text
    (span,) = otel_spans.get_finished_spans()
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert "alice" not in repr(span.attributes)
