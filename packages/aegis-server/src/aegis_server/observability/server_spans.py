"""The outermost ASGI layer while tracing is on: one SERVER span per HTTP request, continuing the caller's
W3C trace context (`traceparent`/`tracestate`, through the global propagator).

The span is named "{METHOD} {route template}" once the route is known (the hot path and the router put it in
the scope), "{METHOD}" for a request no route matched. It carries `http.request.method`, `http.route`,
`http.response.status_code` and `aegis.request.id`; routes add the decision's attributes (see
`tracing.note_decision`). A failed request gets `error.type` = the envelope's error code (read from the
answer's body, which every non-2xx answer of ours is), and Status(ERROR) only for a 5xx.

With tracing off (`active_tracer()` is None) a request passes straight through: no span, no extraction.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import context
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis_server.observability.tracing import SERVER_SPAN, active_tracer

__all__ = ["ServerSpans", "fastapi_telemetry_off"]

# W3C trace context only: the caller's `baggage` is never read (the API's baggage propagator logs a rejected
# header verbatim, and the server has no use for what an application put there).
_W3C = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_W3C.fields)


def fastapi_telemetry_off() -> dict[str, Any]:
    """FastAPI's keyword that switches its own telemetry (FastAPI 0.16x and later) all off, or nothing on a FastAPI
    without it: `ServerSpans` makes the one SERVER span of every route (FastAPI's would be a second, and record
    query strings and exception messages), metrics stay Prometheus, and `serve` alone configures exporters from
    OTEL_* (FastAPI's auto-configuration would add a second OTLP exporter)."""
    try:
        import fastapi.telemetry  # noqa: F401
    except ImportError:
        return {}
    off = {"tracing": False, "operation_spans": False, "metrics": False, "logs": False, "auto_configure": False}
    return {"telemetry": off}


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else None


class ServerSpans:
    """ASGI middleware: a SERVER span around each HTTP request (when a TracerProvider is set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = active_tracer() if scope["type"] == "http" else None
        if tracer is None:
            await self.app(scope, receive, send)
            return
        carrier = {
            name: value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if (name := key.decode("latin-1").lower()) in _TRACE_HEADERS
        }
        method = str(scope.get("method", ""))
        span = tracer.start_span(
            method,
            context=_W3C.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        scope.setdefault("state", {})[SERVER_SPAN] = span
        status = [0]
        error_body: list[bytes] = []

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and status[0] >= 400 and not error_body:
                error_body.append(bytes(message.get("body", b"")))
            await send(message)

        token = context.attach(set_span_in_context(span))
        failed: BaseException | None = None
        try:
            await self.app(scope, receive, send_observed)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            context.detach(token)
            self._finish(span, scope, status[0], error_body, failed)

    @staticmethod
    def _finish(span: Any, scope: Scope, status: int, error_body: list[bytes], failed: BaseException | None) -> None:
        route = getattr(scope.get("route"), "path", None)
        method = str(scope.get("method", ""))
        if route is None:  # refused before routing (the body guard: 400 invalid JSON, 413, 415): a hot route's path
            hot_routes = getattr(scope.get("app"), "hot_routes", {})
            route = scope.get("path") if (method, scope.get("path")) in hot_routes else None
        if route:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        request_id = scope.get("state", {}).get("request_id")
        if request_id:
            span.set_attribute("aegis.request.id", request_id)
        if status == 0 and failed is not None:
            status = 500  # nothing was answered: the client sees the connection end
        if status:
            span.set_attribute("http.response.status_code", status)
        if status >= 400:
            code = _error_code(error_body[0]) if error_body else None
            span.set_attribute("error.type", code or str(status))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
