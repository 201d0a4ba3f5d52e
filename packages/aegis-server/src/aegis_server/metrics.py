"""Prometheus metrics, one CollectorRegistry per app (so several apps in one process never collide)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aegis_sdk.models import ShadowOutcome

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
        self.audit_export_records = Counter(
            "aegis_audit_export_records_total",
            "Audit records a sink durably took, by sink (file, http).",
            ["sink"],
            registry=self.registry,
        )
        self.audit_export_lag = Gauge(
            "aegis_audit_export_lag_records",
            "Audit records committed but not yet exported, by sink (head - cursor).",
            ["sink"],
            registry=self.registry,
        )
        self.audit_export_failures = Counter(
            "aegis_audit_export_failures_total",
            "Batches a sink did not take (retried), by sink.",
            ["sink"],
            registry=self.registry,
        )
        # Rule ids (`policy/rule`) are bounded by the policy set, never by the proposals: fit for a label.
        self.shadow_outcomes = Counter(
            "aegis_shadow_outcomes_total",
            "Outcomes rules in shadow mode would have decided, by rule and whether they differ from the enforced one.",
            ["policy_id", "differs"],
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "aegis_shadow_disagreements_total",
            "Shadow outcomes that differ from the enforced outcome, by rule and transition (enforced -> shadow).",
            ["policy_id", "enforced", "shadow"],
            registry=self.registry,
        )
        self._request_series: dict[tuple[str, str, int], Any] = {}
        self.policy_rules = Gauge("aegis_policy_rules", "Rules in the active policy set.", registry=self.registry)
        self.policy_version = Gauge(
            "aegis_policy_version",
            "The version of the active policy set (0 before one is recorded).",
            registry=self.registry,
        )
        for outcome in ("ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"):
            self.decisions.labels(outcome=outcome)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._request_series.get(key)
        if child is None:  # labels() takes a lock and builds the series key: once per series, not per request
            child = self._request_series[key] = self.requests.labels(method=method, route=route, status=str(status))
        child.observe(seconds)

    def observe_shadow(self, enforced: str, shadow: Sequence[ShadowOutcome]) -> None:
        """Count what the rules in shadow mode would have decided, beside the `enforced` outcome."""
        for entry in shadow:
            differs = entry.outcome != enforced
            self.shadow_outcomes.labels(policy_id=entry.policy_id, differs="true" if differs else "false").inc()
            if differs:
                self.shadow_disagreements.labels(
                    policy_id=entry.policy_id, enforced=enforced, shadow=entry.outcome
                ).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


__all__ = ["Metrics"]
