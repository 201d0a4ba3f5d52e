"""The local ALLOW of an adapter that fails open: made when the platform could not be reached, never by it."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from aegis_sdk.models import DEGRADED_PREFIX, Decision


def degraded_allow(reason: str) -> Decision:
    """An ALLOW whose `degraded` is true (its id starts with `degraded_`), risk 1.0, no audit reference."""
    return Decision(
        decision_id=DEGRADED_PREFIX + uuid.uuid4().hex,
        outcome="ALLOW",
        reason=reason,
        risk_score=1.0,
        constraints={},
        timestamp=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        audit_ref="",
    )


__all__ = ["degraded_allow"]
