"""Prometheus metrics, one CollectorRegistry per app (so several apps in one process never collide)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's metrics. Labels carry outcomes, codes and route templates — never ids or values."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "aegis_decisions_total", "Decisions recorded, by outcome.", ["outcome"], registry=self.registry
        )
        self.decision_latency = Histogram(
            "aegis_decision_latency_seconds",
            "Time to decide and record one proposal (auth excluded).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "aegis_proposals_rejected_total",
            "Proposals answered with an error instead of a decision, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "aegis_audit_failures_total",
            "Writes to the audit store that failed (the request failed closed).",
            registry=self.registry,
        )
        self.reviews = Counter(
            "aegis_reviews_total", "Escalations resolved, by result.", ["result"], registry=self.registry
        )
        self.requests = Histogram(
            "aegis_http_request_duration_seconds",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "aegis_webhook_deliveries_total",
            "Webhook delivery attempts, by result (delivered, retrying, failed).",
            ["result"],
            registry=self.registry,
        )
        self._request_series: dict[tuple[str, str, int], Any] = {}
        self.policy_rules = Gauge("aegis_policy_rules", "Rules in the active policy set.", registry=self.registry)
        for outcome in ("ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"):
            self.decisions.labels(outcome=outcome)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._request_series.get(key)
        if child is None:  # labels() takes a lock and builds the series key: once per series, not per request
            child = self._request_series[key] = self.requests.labels(method=method, route=route, status=str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


__all__ = ["Metrics"]
