"""Engine configuration and the fixed tables of the decision model."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aegis_sdk.models import Outcome, RiskLevel

__all__ = ["BASE_RISK", "STRICTNESS", "EngineConfig"]

BASE_RISK: Mapping[RiskLevel, float] = MappingProxyType({"low": 0.1, "medium": 0.3, "high": 0.6, "critical": 0.85})
"""The base risk score of a capability, by its `risk_level`."""

STRICTNESS: Mapping[Outcome, int] = MappingProxyType({"ALLOW": 0, "REQUIRE_CONFIRMATION": 1, "ESCALATE": 2, "DENY": 3})
"""The strictest outcome of the matching rules wins: DENY > ESCALATE > REQUIRE_CONFIRMATION > ALLOW."""


@dataclass(frozen=True)
class EngineConfig:
    """Tunables of the decision model.

    - `escalate_threshold`: an ALLOW whose risk score is strictly above this becomes ESCALATE.
    - `default_review_timeout_seconds`: the review window of an ESCALATE whose rules set none.
    - `value_key`: the HMAC key of sensitive values in `audit_parameters` (`value_key_from_secret` of
      the server secret). Without one, each config draws a random key: values stay unreadable, but two
      configs hash one value differently.
    - `condition_cost_budget`: the most a condition may cost, estimated from the proposal's data before
      it is evaluated (`_cost`); a condition over it is not evaluated and its rule fails closed
      (`evaluation_budget_exceeded`). One unit is ~7-60 ns of the library's time here.
    """

    escalate_threshold: float = 0.8
    default_review_timeout_seconds: int = 3600
    value_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    condition_cost_budget: int = 500_000

    def __post_init__(self) -> None:
        if not (isinstance(self.escalate_threshold, int | float) and math.isfinite(self.escalate_threshold)):
            raise ValueError("escalate_threshold must be a finite number between 0 and 1")
        if not 0.0 <= self.escalate_threshold <= 1.0:
            raise ValueError(
                f"escalate_threshold must be between 0 and 1 (got {self.escalate_threshold}); "
                "1 disables risk-based escalation"
            )
        if not isinstance(self.default_review_timeout_seconds, int) or self.default_review_timeout_seconds <= 0:
            raise ValueError("default_review_timeout_seconds must be a positive number of seconds, e.g. 3600")
        if (
            not isinstance(self.condition_cost_budget, int)
            or isinstance(self.condition_cost_budget, bool)
            or self.condition_cost_budget < 1
        ):
            raise ValueError("condition_cost_budget must be a positive number of cost units, e.g. 500000")
        if not isinstance(self.value_key, bytes) or len(self.value_key) < 16:
            raise ValueError("value_key must be at least 16 bytes (use value_key_from_secret(server secret))")
