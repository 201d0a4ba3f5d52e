"""Decisions in the fake: propose (scripted), confirm with a token, review, expire, list, report execution.

The refusals, their codes and their audit records are the server's (docs/api.md); what the fake leaves
out is listed in docs/testing.md ("What the fake does not do").
"""

from __future__ import annotations

import dataclasses
import difflib
import secrets
from datetime import datetime, timedelta
from typing import Any

from aegis_sdk._wire.canonical import canonical_hash
from aegis_sdk._wire.cursors import decode_cursor, encode_cursor
from aegis_sdk._wire.envelope import ApiError, governance_error
from aegis_sdk._wire.listing import ListingFilters
from aegis_sdk.models import Decision, ExecutionRecord, ExecutionReport, Proposal, Review, ReviewStatus
from aegis_sdk.testing import _schema
from aegis_sdk.testing._audit import append_audit, audit_parameters, audit_rejection
from aegis_sdk.testing._scripts import resolve
from aegis_sdk.testing._state import DecisionEntry, FakeState, Token, rfc3339

__all__ = [
    "entry",
    "expire",
    "expire_due",
    "get_decision",
    "list_decisions",
    "propose",
    "report_execution",
    "resolve_review",
]

_DEFAULT_RISK: dict[str, float] = {"ALLOW": 0.1, "REQUIRE_CONFIRMATION": 0.5, "ESCALATE": 0.85, "DENY": 0.95}
_CURSOR_KIND, _CURSOR_ORDER = "decisions", "desc"
_TOKEN_MESSAGES = {
    "confirmation_used": "This confirmation token was already used; a token allows one action. Propose again to "
    "get a new decision.",
    "confirmation_expired": "This confirmation token has expired. Propose again to get a new decision.",
    "confirmation_mismatch": "This confirmation token was issued for a different {mismatched}. Resubmit exactly the "
    "proposal that received the token.",
}


def propose(state: FakeState, proposal: Proposal, idempotency: tuple[str, str, str] | None) -> tuple[Decision, bool]:
    """Decide `proposal`; returns (decision, replayed). `idempotency` is (api key hash, Idempotency-Key,
    request hash) or None. A replay (same key, same request) returns the stored decision."""
    with state.lock:
        expire_due(state)
        if idempotency is not None:
            key, key_name, request_hash = idempotency
            stored = state.idempotency.get((key, key_name))
            if stored is not None:
                if stored[0] != request_hash:
                    raise governance_error(
                        409,
                        "idempotency_conflict",
                        "This Idempotency-Key was already used with a different request body. Use a new key "
                        "for a new proposal (the SDK makes one per propose() call).",
                        {"decision_id": stored[1]},
                    )
                return state.entries[stored[1]].decision, True
        state.proposals.append(proposal)
        confirming = bool(proposal.confirmation_token)  # an empty token is no token, as on the server
        decision = _confirm(state, proposal) if confirming else _decide(state, proposal)
        if idempotency is not None:
            state.idempotency[(idempotency[0], idempotency[1])] = (idempotency[2], decision.decision_id)
        return decision, False


def _check_capability(state: FakeState, proposal: Proposal) -> None:
    name = proposal.action.capability
    capability = state.capabilities.get(name)
    if capability is None:
        if state.strict_capabilities:
            suggestions = difflib.get_close_matches(name, list(state.capabilities), n=3, cutoff=0.6)
            hint = (
                "Did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
                if suggestions
                else "Register it (FakePlatform.register_capability or POST /api/v1/capabilities) or check the "
                "spelling."
            )
            audit_rejection(state, proposal, "unknown_capability", {"suggestions": suggestions})
            raise governance_error(
                404,
                "unknown_capability",
                f"Unknown capability {name!r}. {hint}",
                {"capability": name, "suggestions": suggestions},
            )
        return
    errors = _schema.validate(capability.parameter_schema, proposal.action.parameters)
    if errors:
        field = errors[0]["field"]
        audit_rejection(state, proposal, "invalid_parameters", {"field": field})
        raise governance_error(
            422,
            "invalid_parameters",
            f"Invalid parameters for {name!r}: {field}: {errors[0]['message']}. Fix the parameters to match "
            "the capability's parameter_schema (GET /api/v1/capabilities/{name}).",
            {"capability": name, "field": field, "errors": errors},
        )


def _record(state: FakeState, proposal: Proposal, decision: Decision, **extra: Any) -> None:
    state.entries[decision.decision_id] = DecisionEntry(state.next_number(), decision, proposal, state.now(), **extra)


def _audit_proposal(state: FakeState, decision_id: str, proposal: Proposal, **payload: Any) -> None:
    append_audit(
        state,
        "proposal",
        decision_id=decision_id,
        proposal=proposal,
        payload={
            "actor_type": proposal.actor.type,
            "parameters": audit_parameters(state, proposal),
            "resource": proposal.action.resource,
            **payload,
        },
    )


def _decide(state: FakeState, proposal: Proposal) -> Decision:
    _check_capability(state, proposal)
    scripted, source = resolve(state, proposal)
    outcome = scripted.outcome
    now = state.now()
    decision_id = state.new_id("dec")
    capability = proposal.action.capability
    if scripted.reason is not None:
        reason = scripted.reason
    elif source == "default":
        reason = f"FakePlatform default outcome {outcome}: no script matches {capability!r}."
    else:
        reason = f"Scripted by FakePlatform: {outcome} for {capability!r} (script {source!r})."
    token: str | None = None
    expires: datetime | None = None
    review: Review | None = None
    deadline: datetime | None = None
    if outcome == "REQUIRE_CONFIRMATION":
        token, expires = _issue_token(state, decision_id, proposal)
    elif outcome == "ESCALATE":
        seconds = scripted.review_timeout_seconds or state.review_timeout_seconds
        deadline = expires = now + timedelta(seconds=seconds)
        review = Review(status="pending")
    _audit_proposal(state, decision_id, proposal)
    policy_ids = list(scripted.policy_ids) if scripted.policy_ids is not None else [f"fake/{source}"]
    risk = scripted.risk_score if scripted.risk_score is not None else _DEFAULT_RISK[outcome]
    constraints = dict(scripted.constraints or {})
    record = append_audit(
        state,
        "decision",
        decision_id=decision_id,
        proposal=proposal,
        outcome=outcome,
        payload={
            "outcome": outcome,
            "reason": reason,
            "risk_score": risk,
            "policy_ids": policy_ids,
            "constraints": constraints,
        },
    )
    decision = Decision(
        decision_id=decision_id,
        outcome=outcome,
        reason=reason,
        risk_score=risk,
        constraints=constraints,
        timestamp=rfc3339(now),
        audit_ref=record.audit_ref,
        policy_ids=policy_ids,
        confirmation_token=token,
        expires_at=rfc3339(expires) if expires else None,
        review=review,
    )
    _record(state, proposal, decision, review_deadline=deadline, auto_review=scripted.auto_review)
    return decision


def _issue_token(state: FakeState, decision_id: str, proposal: Proposal) -> tuple[str, datetime]:
    token = "ctok_" + secrets.token_urlsafe(24)
    expires = (state.now() + state.confirmation_ttl).replace(microsecond=0)
    state.tokens[token] = Token(
        decision_id=decision_id,
        actor_id=proposal.actor.id,
        actor_type=proposal.actor.type,
        capability=proposal.action.capability,
        params_hash=canonical_hash(proposal.action.parameters),
        expires_at=expires,
    )
    return token, expires


def _reject_token(
    state: FakeState, proposal: Proposal, code: str, parent: str, mismatched: list[str] | None = None
) -> ApiError:
    details: dict[str, Any] = {"parent_decision_id": parent}
    if mismatched:
        details["mismatched"] = mismatched
    audit_rejection(state, proposal, code, dict(details))
    return governance_error(409, code, _TOKEN_MESSAGES[code].format(mismatched=", ".join(mismatched or ())), details)


def _confirm(state: FakeState, proposal: Proposal) -> Decision:
    token = state.tokens.get(proposal.confirmation_token or "")
    if token is None:
        audit_rejection(state, proposal, "confirmation_invalid", {})
        raise governance_error(
            409,
            "confirmation_invalid",
            "The confirmation token was not issued by this platform (or is damaged). Resubmit with the token "
            "exactly as it came in the decision, or propose again without one.",
        )
    parent = token.decision_id
    if token.used:
        raise _reject_token(state, proposal, "confirmation_used", parent)
    mismatched = [
        name
        for name, same in (
            ("actor", (token.actor_id, token.actor_type) == (proposal.actor.id, proposal.actor.type)),
            ("capability", token.capability == proposal.action.capability),
            ("parameters", token.params_hash == canonical_hash(proposal.action.parameters)),
        )
        if not same
    ]
    if mismatched:
        raise _reject_token(state, proposal, "confirmation_mismatch", parent, mismatched)
    if state.now() >= token.expires_at:
        raise _reject_token(state, proposal, "confirmation_expired", parent)
    token.used = True
    parent_decision = state.entries[parent].decision
    now = state.now()
    decision_id = state.new_id("dec")
    _audit_proposal(state, decision_id, proposal, parent_decision_id=parent)
    review = parent_decision.review
    how = f"approved by {review.reviewer}" if review is not None and review.reviewer else "confirmed with its token"
    reason = f"Decision {parent} was {how}. Original decision: {parent_decision.reason}"
    record = append_audit(
        state,
        "decision",
        decision_id=decision_id,
        proposal=proposal,
        outcome="ALLOW",
        payload={"outcome": "ALLOW", "reason": reason, "parent_decision_id": parent},
    )
    append_audit(
        state, "confirmation", decision_id=parent, proposal=proposal, payload={"token_consumed_by": decision_id}
    )
    decision = Decision(
        decision_id=decision_id,
        outcome="ALLOW",
        reason=reason,
        risk_score=parent_decision.risk_score,
        constraints=dict(parent_decision.constraints),
        timestamp=rfc3339(now),
        audit_ref=record.audit_ref,
        policy_ids=list(parent_decision.policy_ids),
        parent_decision_id=parent,
    )
    _record(state, proposal, decision)
    return decision


def entry(state: FakeState, decision_id: str) -> DecisionEntry:
    """The decision `decision_id` (404 `not_found` when there is none)."""
    return state.lookup(state.entries, "decision", decision_id)


def get_decision(state: FakeState, decision_id: str, *, polled: bool) -> Decision:
    """A decision read back; a poll (`GET /decisions/{id}`) plays its script's `auto_review`."""
    with state.lock:
        expire_due(state)
        found = entry(state, decision_id)
        pending = found.decision.review is not None and found.decision.review.status == "pending"
        if polled and pending and found.auto_review is not None:
            if found.auto_review == "expire":
                _expire(state, found)
            else:
                approve = found.auto_review == "approve"
                resolve_review(state, decision_id, approve=approve, reviewer="fake-auto-reviewer", note=None)
        return found.decision


def _not_pending(decision_id: str, review: Review | None) -> ApiError:
    status = review.status if review is not None else "not_escalated"
    return governance_error(
        409,
        "not_pending",
        f"Decision {decision_id} is not awaiting review (status: {status}). Only a pending ESCALATE within its "
        "deadline can be approved or denied.",
        {"decision_id": decision_id, "status": status},
    )


def resolve_review(state: FakeState, decision_id: str, *, approve: bool, reviewer: str, note: str | None) -> Decision:
    """Approve (a confirmation token is issued) or deny (a final DENY) a pending ESCALATE."""
    with state.lock:
        expire_due(state)
        found = entry(state, decision_id)
        review = found.decision.review
        if found.decision.outcome != "ESCALATE" or review is None or review.status != "pending":
            raise _not_pending(decision_id, review)
        now = state.now()
        status: ReviewStatus = "approved" if approve else "denied"
        changes: dict[str, Any] = {
            "review": Review(status=status, reviewer=reviewer, note=note, resolved_at=rfc3339(now))
        }
        if approve:
            token, expires = _issue_token(state, decision_id, found.proposal)
            changes.update(confirmation_token=token, expires_at=rfc3339(expires))
        else:  # as the server: a denied escalation is the final DENY, and its reason says who denied it
            changes["outcome"] = "DENY"
            changes["reason"] = f"{found.decision.reason}; final DENY: the reviewer {reviewer} denied it"
        found.decision = dataclasses.replace(found.decision, **changes)
        append_audit(
            state,
            "review",
            decision_id=decision_id,
            proposal=found.proposal,
            outcome=None if approve else "DENY",
            payload={"status": status, "reviewer": reviewer, "note": note, "resolved_at": rfc3339(now)},
        )
        return found.decision


def expire(state: FakeState, decision_id: str) -> Decision:
    """Let a pending ESCALATE pass its deadline now."""
    with state.lock:
        found = entry(state, decision_id)
        review = found.decision.review
        if review is None or review.status != "pending":
            raise _not_pending(decision_id, review)
        _expire(state, found)
        return found.decision


def _expire(state: FakeState, found: DecisionEntry) -> None:
    found.decision = dataclasses.replace(
        found.decision,
        outcome="DENY",
        reason=f"{found.decision.reason}; final DENY: no reviewer decided before the review deadline",
        review=Review(status="expired", resolved_at=rfc3339(state.now())),
    )
    append_audit(
        state,
        "review_expired",
        decision_id=found.decision.decision_id,
        proposal=found.proposal,
        outcome="DENY",
        payload={"status": "expired", "final_outcome": "DENY"},
    )


def expire_due(state: FakeState) -> None:
    """Expire every pending review whose deadline has passed (the caller holds the lock)."""
    now = state.now()
    for found in state.entries.values():
        review = found.decision.review
        deadline = found.review_deadline
        if review is not None and review.status == "pending" and deadline is not None and now >= deadline:
            _expire(state, found)


def list_decisions(
    state: FakeState, filters: ListingFilters, limit: int, cursor: str | None
) -> tuple[list[Decision], str | None]:
    """One page of decisions, newest first, and the cursor of the next page (None on the last)."""
    before = None if cursor is None else decode_cursor(cursor, _CURSOR_KIND, _CURSOR_ORDER)
    with state.lock:
        expire_due(state)
        found = [e for e in reversed(state.entries.values()) if _matches(e, filters)]
    if before is not None:
        found = [e for e in found if e.seq < before]
    page = found[:limit]
    more = len(found) > limit and page
    return [e.decision for e in page], (encode_cursor(_CURSOR_KIND, _CURSOR_ORDER, page[-1].seq) if more else None)


def _matches(found: DecisionEntry, filters: ListingFilters) -> bool:
    decision, proposal = found.decision, found.proposal
    checks = (
        (filters.actor_id, proposal.actor.id),
        (filters.actor_type, proposal.actor.type),
        (filters.decision_id, decision.decision_id),
        (filters.capability, proposal.action.capability),
        (filters.outcome, decision.outcome),
        (filters.session_id, proposal.context.session_id),
        (filters.review_status, decision.review.status if decision.review else None),
    )
    if any(wanted is not None and wanted != actual for wanted, actual in checks):
        return False
    return filters.in_window(found.created_at)


def report_execution(state: FakeState, decision_id: str, report: ExecutionReport) -> ExecutionRecord:
    """Record how an allowed action ran; once per decision, and only for an ALLOW."""
    with state.lock:
        found = entry(state, decision_id)
        if found.decision.outcome != "ALLOW":
            raise governance_error(
                409,
                "not_allowed",
                f"Decision {decision_id} is {found.decision.outcome}, not ALLOW: only an allowed action runs, "
                "so only an ALLOW decision takes an execution report.",
                {"decision_id": decision_id, "outcome": found.decision.outcome},
            )
        if decision_id in state.executions:
            raise governance_error(
                409,
                "already_reported",
                f"The execution of decision {decision_id} was already reported. Report each execution once.",
                {"decision_id": decision_id},
            )
        state.executions[decision_id] = report
        record = append_audit(
            state,
            "execution",
            decision_id=decision_id,
            proposal=found.proposal,
            outcome=report.status,
            payload={
                "status": report.status,
                "error": report.error.model_dump(mode="json") if report.error else None,
                "duration_ms": report.duration_ms,
                "result_sha256": canonical_hash(report.result) if report.result is not None else None,
            },
        )
        return ExecutionRecord(
            decision_id=decision_id, status=report.status, recorded_at=record.timestamp, audit_ref=record.audit_ref
        )
