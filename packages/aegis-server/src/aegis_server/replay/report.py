"""The replay report: what the CLI prints with `--json` and what `POST /api/v1/policies/replay` answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "NOT_REPLAYABLE_REASONS",
    "REFUSALS",
    "CandidateDescription",
    "ReplayReport",
    "ReplayTotals",
    "ReplayWindow",
    "RuleCount",
    "Transition",
    "VersionCount",
]

REFUSALS: tuple[str, ...] = ("unknown_capability", "invalid_parameters")
"""The `to` of a transition when the candidate would refuse the proposal instead of deciding it."""

NOT_REPLAYABLE_REASONS: tuple[str, ...] = ("sensitive_parameters",)
"""Why a stored proposal cannot be re-decided: a candidate rule reads a parameter the audit keeps only as a
keyed hash (or the candidate schema refuses a hashed value), so its answer would be a guess."""


class ReplayWindow(BaseModel):
    """The audit records replayed: created in `[since, until)`."""

    since: datetime
    until: datetime


class CandidateDescription(BaseModel):
    """The policy set the proposals were re-decided under."""

    kind: Literal["files", "version", "active", "policies"] = Field(
        description="files: a folder of policy files (plus the API-stored items they do not define); version: "
        "a recorded policy-set version; active: the latest recorded version; policies: given in the request."
    )
    path: str | None = None
    version: int | None = None
    digest: str


class RuleCount(BaseModel):
    """A rule of the candidate that decided (the first of the decision's policy_ids) and how often."""

    policy_id: str = Field(
        description="`policy/rule`; `(default-deny)` when no rule matched; `(unknown_capability)` or "
        "`(invalid_parameters)` for a refusal."
    )
    count: int


class Transition(BaseModel):
    """Proposals whose outcome changed from `from_` to `to` under the candidate."""

    from_: str = Field(alias="from", serialization_alias="from")
    to: str = Field(description="The candidate's outcome, or a refusal: unknown_capability, invalid_parameters.")
    count: int
    rules: list[RuleCount]
    sample_decision_ids: list[str] = Field(description="The first (oldest) decisions of this transition.")

    model_config = {"populate_by_name": True}


class VersionCount(BaseModel):
    """The replayed proposals decided under one policy-set version (None: decided before versions were kept)."""

    version: int | None
    proposals: int
    changed: int


class ReplayTotals(BaseModel):
    """`stored` = replayed + confirmations_skipped + the not replayable; replayed = unchanged + changed."""

    stored: int
    replayed: int
    unchanged: int
    changed: int
    confirmations_skipped: int = Field(
        description="Resubmissions with a confirmation token: a token decided them, not the policies."
    )
    not_replayable: dict[str, int] = Field(description="By reason: sensitive_parameters.")


class ReplayReport(BaseModel):
    """How the stored proposals of a window would have been decided under a candidate policy set."""

    window: ReplayWindow
    candidate: CandidateDescription
    totals: ReplayTotals
    transitions: list[Transition] = Field(description="The changed outcomes, the most frequent first.")
    by_original_version: list[VersionCount]
    truncated: bool = Field(
        description="Only the oldest proposals of the window were replayed: see `truncated_reason`."
    )
    truncated_reason: Literal["limit", "timeout"] | None = Field(
        default=None,
        description="limit: the window held more proposals than the limit; timeout: the replay ran longer than "
        "the server's replay_timeout_seconds. The totals count what was replayed. None when not truncated.",
    )
    elapsed_seconds: float
    proposals_per_second: float
