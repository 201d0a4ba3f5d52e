"""`client.health()` and `client.ready()`: the platform's liveness and readiness probes (call builders)."""

from __future__ import annotations

from aegis_sdk._parsing import model_parser, parse_health_report
from aegis_sdk._request import Call
from aegis_sdk.models import Health


def health_call() -> Call[Health]:
    return Call("GET", "/health", model_parser(Health), operation="health")


def ready_call() -> Call[Health]:
    # Readiness is a snapshot: no retries, and a 503 whose body is a health report is the answer.
    return Call("GET", "/ready", parse_health_report, retry=False, accept=frozenset({503}), operation="ready")


__all__ = ["health_call", "ready_call"]
