"""The records of the webhook store room: endpoints, deliveries, a delivery claimed for an attempt, and an
attempt's result."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aegis_server.store.webhook_input import ALL_EVENTS

__all__ = ["ClaimedDelivery", "DeliveryResult", "WebhookDelivery", "WebhookEndpoint"]


@dataclasses.dataclass(frozen=True)
class WebhookEndpoint:
    """An endpoint as stored, without its secret; `counts`: its deliveries by status (when read with them)."""

    endpoint_id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    capability_glob: str | None
    min_risk: float | None
    body_format: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def wants(self, event_type: str, capability: str, risk_score: float) -> bool:
        """True when an event of this type, capability and risk passes the endpoint's filter."""
        if ALL_EVENTS not in self.event_types and event_type not in self.event_types:
            return False
        if self.capability_glob is not None and not fnmatch.fnmatchcase(capability, self.capability_glob):
            return False
        return self.min_risk is None or risk_score >= self.min_risk

    def filter_text(self) -> str | None:
        """The filter as people read it (`capability payments.*, risk >= 0.5`); None: no filter."""
        parts = []
        if self.capability_glob is not None:
            parts.append(f"capability {self.capability_glob}")
        if self.min_risk is not None:
            parts.append(f"risk >= {self.min_risk:g}")
        return ", ".join(parts) or None


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """One event's delivery to one endpoint: its `event_id` is the `webhook-id` of every attempt."""

    delivery_id: int
    event_id: str
    event_type: str
    decision_id: str
    endpoint_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery claimed for one attempt: what to send where, and the lease that proves the claim."""

    delivery_id: int
    attempts: int
    lease: datetime
    event_id: str
    event_type: str
    event_created_at: datetime
    data: Mapping[str, Any]
    endpoint_id: str
    url: str
    secret: str
    body_format: str


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """How an attempt ended: delivered, or not (the status code or error) and when to try again (None:
    never, the delivery failed)."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    retry_at: datetime | None = None
