"""The governance record attached to a governed tool's message as its artifact (never shown to the model)."""

from __future__ import annotations

from typing import Any, TypedDict

from aegis_sdk import Decision


class GovernanceArtifact(TypedDict):
    """A plain dict (so checkpointers store it as is) describing how AEGIS governed one tool call.

    - `capability`: what was proposed.
    - `decision_id`, `audit_ref`, `outcome`, `reason`, `risk_score`, `policy_ids`, `constraints`: the final
      decision (the ALLOW the tool ran under, or the decision that refused); None without a decision.
    - `parent_decision_id`: for an ALLOW obtained by a confirmation or an approved review, the
      REQUIRE_CONFIRMATION / ESCALATE decision it resolved.
    - `refusal`: None when the tool ran, else the refusal code (see `GovernanceRefusal.code`).
    - `execution`: `SUCCESS` / `FAILED` as reported to AEGIS after the tool ran (None: not reported).
    - `execution_audit_ref`: always None now: the execution report is sent in the background, after the tool
      message exists (see the client's `report_stats`, or the decision's audit trail). Kept so stored
      artifacts keep one shape.
    - `tool_artifact`: the wrapped tool's own artifact (tools with `response_format="content_and_artifact"`).
    """

    capability: str
    decision_id: str | None
    audit_ref: str | None
    outcome: str | None
    reason: str | None
    risk_score: float | None
    policy_ids: list[str]
    constraints: dict[str, Any]
    parent_decision_id: str | None
    refusal: str | None
    execution: str | None
    execution_audit_ref: str | None
    tool_artifact: Any


def governance_artifact(
    capability: str, decision: Decision | None, *, refusal: str | None = None
) -> GovernanceArtifact:
    return GovernanceArtifact(
        capability=capability,
        decision_id=decision.decision_id if decision else None,
        audit_ref=decision.audit_ref if decision else None,
        outcome=decision.outcome if decision else None,
        reason=decision.reason if decision else None,
        risk_score=decision.risk_score if decision else None,
        policy_ids=list(decision.policy_ids) if decision else [],
        constraints=dict(decision.constraints) if decision else {},
        parent_decision_id=decision.parent_decision_id if decision else None,
        refusal=refusal,
        execution=None,
        execution_audit_ref=None,
        tool_artifact=None,
    )


__all__ = ["GovernanceArtifact", "governance_artifact"]
