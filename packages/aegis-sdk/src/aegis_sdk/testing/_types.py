"""Public value types of `aegis_sdk.testing`: scripted outcomes and recorded requests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aegis_sdk.models import OUTCOMES, Outcome, Proposal

AutoReview = Literal["approve", "deny", "expire"]
"""How a scripted ESCALATE resolves itself the first time someone reads the decision back."""

_AUTO_REVIEWS: tuple[str, ...] = ("approve", "deny", "expire")


@dataclasses.dataclass(frozen=True)
class ScriptedOutcome:
    """One answer the fake platform gives to a proposal.

    Only `outcome` is required; the other fields default to values that depend on the outcome
    (a reason naming the script, a fixed risk score per outcome, no constraints).
    `auto_review` (ESCALATE only) resolves the review the first time the decision is read back with
    `GET /decisions/{id}` — so `client.wait_for_review(decision)` sees it resolved without a second
    thread playing the reviewer.
    """

    outcome: Outcome
    reason: str | None = None
    risk_score: float | None = None
    constraints: Mapping[str, Any] | None = None
    policy_ids: Sequence[str] | None = None
    review_timeout_seconds: int | None = None
    auto_review: AutoReview | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if self.risk_score is not None and not 0.0 <= self.risk_score <= 1.0:
            raise ValueError(f"risk_score must be between 0.0 and 1.0, got {self.risk_score!r}")
        if self.review_timeout_seconds is not None and self.review_timeout_seconds <= 0:
            raise ValueError("review_timeout_seconds must be a positive number of seconds")
        if self.auto_review is not None:
            if self.auto_review not in _AUTO_REVIEWS:
                raise ValueError(f"auto_review must be one of {', '.join(_AUTO_REVIEWS)}, got {self.auto_review!r}")
            if self.outcome != "ESCALATE":
                raise ValueError("auto_review only applies to ESCALATE outcomes")


OutcomeSpec = Outcome | ScriptedOutcome
"""An outcome name such as `"DENY"`, or a full `ScriptedOutcome`."""

Responder = Callable[[Proposal], OutcomeSpec]
"""A function that picks the outcome from the proposal, e.g. from its parameters."""


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake platform received, as the transport saw it.

    `headers` has lower-case names and never contains `authorization`. `json` is the parsed body
    (None when there was no body or it was not JSON). `status_code` is the status the fake answered
    with, or None when it raised a transport error (`fail_with_connect_error`, `fail_with_timeout`).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status_code: int | None


__all__ = ["AutoReview", "OutcomeSpec", "RecordedRequest", "Responder", "ScriptedOutcome"]
