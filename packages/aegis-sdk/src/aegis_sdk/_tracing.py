"""OpenTelemetry for the clients (no I/O): one CLIENT span per public call, W3C context in every attempt.

Only the OpenTelemetry API is used; the application chooses (or not) an SDK and an exporter. Until it sets a
TracerProvider the API's `ProxyTracerProvider` is in place and `tracing_on()` is False: the clients then
create no span and inject nothing. The check is live (a provider may be set after this module is imported).
Attributes carry ids, outcomes and the capability, never parameter values, tokens, reasons or keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aegis_sdk._version import __version__
from aegis_sdk.errors import AegisError, APIStatusError
from aegis_sdk.models import Decision, ExecutionRecord

# `get_tracer_provider()` looks the environment up on every call while no provider is set (~1 µs here); the
# API module's global is read directly instead (~50 ns), and the public call is the fallback should it go.
_GLOBAL_READABLE = hasattr(trace, "_TRACER_PROVIDER")
# A provider named by this variable is loaded lazily by the API on the first `get_tracer_provider()`.
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def tracing_on() -> bool:
    """True once the application has set a TracerProvider; a live check, as apps set it after imports."""
    if _GLOBAL_READABLE and not _PROVIDER_FROM_ENV:
        return trace._TRACER_PROVIDER is not None
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


# W3C trace context only (what the server continues): never the application's baggage, which can hold
# anything (user ids, e-mail addresses) and has no business reaching the governance platform.
_W3C = TraceContextTextMapPropagator()


def inject_context(headers: MutableMapping[str, str]) -> None:
    """Add the current W3C trace context (traceparent, tracestate) to `headers` when tracing is on."""
    if tracing_on():
        _W3C.inject(headers)


def error_type(exc: BaseException) -> str:
    """The API error code of an error the platform answered with, else the exception's class name."""
    if isinstance(exc, APIStatusError) and exc.code:
        return exc.code
    return type(exc).__name__


def record_failure(span: Span, exc: BaseException) -> None:
    """ERROR status without a description (messages can quote values) and `error.type`."""
    span.set_attribute("error.type", error_type(exc))
    if isinstance(exc, AegisError) and exc.status_code is not None:
        span.set_attribute("http.response.status_code", exc.status_code)
    span.set_status(Status(StatusCode.ERROR))


def record_result(span: Span, result: object) -> None:
    """The answer's ids and outcome (a Decision, an ExecutionRecord); other answers add nothing."""
    if isinstance(result, Decision):
        span.set_attribute("aegis.decision.id", result.decision_id)
        span.set_attribute("aegis.decision.outcome", result.outcome)
        span.set_attribute("aegis.policy.ids", list(result.policy_ids))
        span.set_attribute("aegis.risk.score", float(result.risk_score))
    elif isinstance(result, ExecutionRecord):
        span.set_attribute("aegis.decision.id", result.decision_id)
        span.set_attribute("aegis.execution.status", result.status)


@contextmanager
def client_span(operation: str, endpoint: str, capability: str | None) -> Iterator[Span]:
    """The current CLIENT span `aegis.<operation>` around one public call; call only when `tracing_on()`.
    Ends it with ERROR and `error.type` if the call raises (no exception event: its text can carry values)."""
    url = urlsplit(endpoint)
    attributes: dict[str, str | int] = {"server.address": url.hostname or ""}
    port = url.port or (443 if url.scheme == "https" else 80)
    attributes["server.port"] = port
    if capability is not None:
        attributes["aegis.capability"] = capability
    tracer = trace.get_tracer("aegis_sdk", __version__)
    with tracer.start_as_current_span(
        f"aegis.{operation}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_failure(span, exc)
            raise


__all__ = ["client_span", "error_type", "inject_context", "record_failure", "record_result", "tracing_on"]
