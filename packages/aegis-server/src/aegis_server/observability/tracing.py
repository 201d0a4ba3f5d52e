"""The server's spans through the OpenTelemetry API, off and costless when no TracerProvider is set.

`active_tracer()` is the one live check every span site makes: while the global provider is still the API's
`ProxyTracerProvider` (no application configured tracing) it returns None and nothing is created, extracted
or recorded. It is checked on every call, not cached at import: `serve` (or an embedding application) may set
a provider after this module is imported, and tests swap it.

Attributes are the documented `aegis.*` keys and semantic-convention keys only: never parameter values,
reasons, tokens, keys, actor or session ids. Exceptions are never recorded (their text can quote values):
a failed span gets `error.type` (the API error code, else the exception class name), and Status(ERROR) only
when the failure is a server error (5xx).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, Span, Status, StatusCode, Tracer, TracerProvider

from aegis_server import __version__

if TYPE_CHECKING:
    from aegis_sdk.models import Decision

__all__ = [
    "SERVER_SPAN",
    "active_tracer",
    "child_span",
    "decision_attributes",
    "error_type",
    "mark_failed",
    "note_decision",
    "start_answer_span",
]

TRACER_NAME = "aegis_server"
SERVER_SPAN = "aegis_server_span"
"""Key of the ASGI scope's `state` holding the request's SERVER span (while tracing is on)."""

_cache: tuple[object, Tracer] | None = None
_PROVIDER_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ  # the API loads that one lazily


_UNKNOWN = object()


def _global_provider() -> TracerProvider | None:
    # `trace.get_tracer_provider()` looks OTEL_PYTHON_TRACER_PROVIDER up in os.environ on every call while no
    # provider is set (~0.5 us, on every request of an untraced server): the API's own global is read first.
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENVIRONMENT:
        return None
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, ProxyTracerProvider) else provider


def active_tracer() -> Tracer | None:
    """The server's tracer from the global provider, or None while no provider is set (tracing is off)."""
    global _cache
    provider = _global_provider()
    if provider is None:
        return None
    cached = _cache
    if cached is None or cached[0] is not provider:
        cached = _cache = (provider, provider.get_tracer(TRACER_NAME, __version__))
    return cached[1]


def error_type(exc: BaseException) -> str:
    """What a failure is called on a span: the API error code when it has one, else the class name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def _is_server_error(exc: BaseException) -> bool:
    from fastapi.exceptions import RequestValidationError

    from aegis_server.api.error_mapping import api_error
    from aegis_server.errors import ApiError
    from aegis_server.governance.errors import GovernanceError
    from aegis_server.store import errors as store_errors

    if isinstance(exc, (store_errors.IdempotencyConflict, store_errors.TokenAlreadyUsed)):
        return False  # a lost race the caller answers as a replay / a 409
    if isinstance(exc, ApiError):
        return exc.status >= 500
    if isinstance(exc, GovernanceError):
        return api_error(exc).status >= 500
    if isinstance(exc, RequestValidationError):
        return False
    code = getattr(exc, "status_code", None)  # a framework HTTPException
    return code >= 500 if isinstance(code, int) else True  # anything else becomes the 500 envelope


def mark_failed(span: Span, exc: BaseException) -> None:
    """Set `error.type` on a span whose work raised `exc`; Status(ERROR), without a description, for a 5xx."""
    span.set_attribute("error.type", error_type(exc))
    if _is_server_error(exc):
        span.set_status(Status(StatusCode.ERROR))


@contextmanager
def _traced(tracer: Tracer, name: str) -> Iterator[Span]:
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            mark_failed(span, exc)
            raise


class _Untraced:
    """The context manager of a span not made (tracing off): one shared instance, nothing per call."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNTRACED = _Untraced()


def child_span(name: str) -> Any:
    """A context manager: an INTERNAL span `name`, current inside the block (its value is the span), or,
    with tracing off, nothing at all (its value is None)."""
    tracer = active_tracer()
    return _UNTRACED if tracer is None else _traced(tracer, name)


def decision_attributes(decision: Decision) -> dict[str, Any]:
    """The attributes a decision gives its spans: ids, outcome, policies, risk and version; nothing else."""
    attributes: dict[str, Any] = {
        "aegis.decision.id": decision.decision_id,
        "aegis.decision.outcome": decision.outcome,
        "aegis.policy.ids": list(decision.policy_ids),
        "aegis.risk.score": float(decision.risk_score),
    }
    if decision.policy_version is not None:
        attributes["aegis.policy.version"] = int(decision.policy_version)
    return attributes


def note_decision(state: dict[str, Any], decision: Decision, capability: str) -> None:
    """Put a request's decision on its SERVER span (kept in the scope's `state`), when tracing is on."""
    span = state.get(SERVER_SPAN)
    if span is not None:
        span.set_attributes({**decision_attributes(decision), "aegis.capability": capability})


def start_answer_span() -> Span | None:
    """The `aegis.answer` span of a decision's response (not made current; `AnswerResponse` ends it once
    sent), or None while tracing is off."""
    tracer = active_tracer()
    return None if tracer is None else tracer.start_span("aegis.answer")
