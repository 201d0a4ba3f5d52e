"""The fake platform's state and behaviour, behind one lock; `_http` speaks HTTP in front of it."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import json
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import TypeAdapter

from aegis_sdk.models import (
    AuditRecord,
    AuditVerification,
    BrokenLink,
    Capability,
    Decision,
    ExecutionRecord,
    ExecutionReport,
    Outcome,
    Policy,
    PolicyProblem,
    Proposal,
    Review,
    ReviewStatus,
)
from aegis_sdk.testing import _schema
from aegis_sdk.testing._types import AutoReview, OutcomeSpec, RecordedRequest, Responder, ScriptedOutcome

DECISION_ADAPTER: TypeAdapter[Decision] = TypeAdapter(Decision)
GENESIS_HASH = "0" * 64

_DEFAULT_RISK: dict[str, float] = {"ALLOW": 0.1, "REQUIRE_CONFIRMATION": 0.5, "ESCALATE": 0.85, "DENY": 0.95}


class ApiError(Exception):
    """An error answer of the fake, rendered by `_http` as the platform's envelope."""

    def __init__(
        self,
        status: int,
        type: str,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        "not_found",
        f"No {what} {ident!r} exists. Check the {what} name or id (list them with GET on the collection).",
        {"resource": what, "id": ident},
    )


def governance_error(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> ApiError:
    return ApiError(status, "governance_error", code, message, details)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def decision_json(decision: Decision) -> dict[str, Any]:
    data: dict[str, Any] = DECISION_ADAPTER.dump_python(decision, mode="json")
    return data


@dataclasses.dataclass
class _Rule:
    pattern: str
    order: int
    answer: OutcomeSpec | Responder | None
    defaults: dict[str, Any]
    sequence: deque[OutcomeSpec] | None = None

    def specificity(self) -> tuple[bool, int, int]:
        literal = sum(1 for char in self.pattern if char not in "*?[]")
        return (not any(char in self.pattern for char in "*?["), literal, self.order)


@dataclasses.dataclass
class _Failure:
    kind: Literal["status", "connect", "timeout"]
    remaining: int
    path: str | None = None
    status: int = 503
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


@dataclasses.dataclass
class _Token:
    decision_id: str
    actor_id: str
    capability: str
    params_hash: str
    expires_at: datetime
    used: bool = False


@dataclasses.dataclass
class DecisionEntry:
    seq: int
    decision: Decision
    proposal: Proposal
    created_at: datetime
    review_deadline: datetime | None = None
    auto_review: AutoReview | None = None


@dataclasses.dataclass(frozen=True)
class DecisionFilters:
    actor_id: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    review_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_type: str | None = None
    decision_id: str | None = None


class Core:
    """Everything the fake knows. Every method takes the lock; `_http` and `FakePlatform` call these."""

    def __init__(
        self,
        *,
        default_outcome: Outcome,
        strict_capabilities: bool,
        capabilities: Iterable[Capability],
        policies: Iterable[Policy],
        clock: Callable[[], datetime] | None,
        confirmation_ttl_seconds: int,
        review_timeout_seconds: int,
        api_key: str | None,
        key_name: str,
        scopes: Iterable[str] | None,
    ) -> None:
        ScriptedOutcome(default_outcome)  # validates the name
        self.lock = threading.RLock()
        self.default_outcome: Outcome = default_outcome
        self.strict_capabilities = strict_capabilities
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.confirmation_ttl = timedelta(seconds=confirmation_ttl_seconds)
        self.review_timeout_seconds = review_timeout_seconds
        self.api_key = api_key
        self.key_name = key_name
        self.scopes = None if scopes is None else frozenset(scopes)
        self._initial_capabilities = {c.name: c for c in capabilities}
        self._initial_policies = {p.name: p for p in policies}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.offset = timedelta()
            self.rules: list[_Rule] = []
            self.failures: list[_Failure] = []
            self.entries: dict[str, DecisionEntry] = {}
            self.tokens: dict[str, _Token] = {}
            self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}
            self.proposals: list[Proposal] = []
            self.executions: dict[str, ExecutionReport] = {}
            self.requests: list[RecordedRequest] = []
            self.audit: list[AuditRecord] = []
            self.capabilities: dict[str, Capability] = dict(self._initial_capabilities)
            self.policies: dict[str, Policy] = dict(self._initial_policies)
            self.counter = 0

    # -- time, ids ------------------------------------------------------------------------------

    def now(self) -> datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment + self.offset

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self._next():06d}{secrets.token_hex(4)}"

    # -- scripting --------------------------------------------------------------------------------

    def add_rule(self, pattern: str, answer: OutcomeSpec | Responder | None, defaults: dict[str, Any]) -> None:
        with self.lock:
            self.rules.append(_Rule(pattern, self._next(), answer, defaults))

    def add_sequence(self, pattern: str, outcomes: Iterable[OutcomeSpec]) -> None:
        with self.lock:
            self.rules.append(_Rule(pattern, self._next(), None, {}, deque(outcomes)))

    def add_failure(self, failure: _Failure) -> None:
        with self.lock:
            self.failures.append(failure)

    def take_failure(self, path: str) -> _Failure | None:
        with self.lock:
            for failure in self.failures:
                if failure.matches(path):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self.failures.remove(failure)
                    return failure
            return None

    def _resolve(self, proposal: Proposal) -> tuple[ScriptedOutcome, str]:
        capability = proposal.action.capability
        matching = [
            rule
            for rule in self.rules
            if fnmatch.fnmatchcase(capability, rule.pattern) and (rule.sequence is None or rule.sequence)
        ]
        if not matching:
            return ScriptedOutcome(self.default_outcome), "default"
        rule = max(matching, key=_Rule.specificity)
        if rule.sequence is not None:
            return _as_outcome(rule.sequence.popleft(), {}), rule.pattern
        answer = rule.answer
        if callable(answer):
            answer = answer(proposal)
        if answer is None:
            raise TypeError(f"the script for {rule.pattern!r} returned None; return an outcome such as 'ALLOW'")
        return _as_outcome(answer, rule.defaults), rule.pattern

    # -- audit --------------------------------------------------------------------------------------

    def append_audit(
        self,
        event_type: str,
        *,
        decision_id: str | None = None,
        proposal: Proposal | None = None,
        outcome: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> AuditRecord:
        previous = self.audit[-1].hash if self.audit else GENESIS_HASH
        fields: dict[str, Any] = {
            "audit_ref": self._id("aud"),
            "sequence": len(self.audit) + 1,
            "event_type": event_type,
            "decision_id": decision_id,
            "actor_id": proposal.actor.id if proposal else None,
            "capability": proposal.action.capability if proposal else None,
            "outcome": outcome,
            "session_id": proposal.context.session_id if proposal else None,
            "timestamp": rfc3339(self.now()),
            "payload": payload or {},
            "previous_hash": previous,
        }
        record = AuditRecord(**fields, hash=_link_hash(previous, fields))
        self.audit.append(record)
        return record

    def verify(self) -> AuditVerification:
        with self.lock:
            previous = GENESIS_HASH
            for index, record in enumerate(self.audit, start=1):
                problem = None
                if record.sequence != index:
                    problem = f"sequence {record.sequence} where {index} was expected"
                elif record.previous_hash != previous:
                    problem = "previous_hash does not match the hash of the record before"
                elif record.hash != _link_hash(previous, record.model_dump(mode="json", exclude={"hash"})):
                    problem = "hash does not match the record's contents"
                if problem is not None:
                    broken = BrokenLink(sequence=index, audit_ref=record.audit_ref, reason=problem)
                    return AuditVerification(valid=False, records_checked=index, head_hash=None, first_broken=broken)
                previous = record.hash
            head = self.audit[-1].hash if self.audit else None
            return AuditVerification(valid=True, records_checked=len(self.audit), head_hash=head)

    def _audit_parameters(self, proposal: Proposal) -> dict[str, Any]:
        parameters = dict(proposal.action.parameters)
        capability = self.capabilities.get(proposal.action.capability)
        if capability is not None:
            for name in _schema.sensitive_fields(capability.parameter_schema):
                if name in parameters:
                    parameters[name] = "sha256:" + canonical_hash(parameters[name])
        return parameters

    # -- proposals ------------------------------------------------------------------------------------

    def propose(self, proposal: Proposal, idempotency: tuple[str, str, str] | None) -> tuple[Decision, bool]:
        """Decide `proposal`; returns (decision, replayed). `idempotency` is (api key hash, Idempotency-Key,
        request hash) or None. A replay (same key, same request) returns the stored decision."""
        with self.lock:
            self.expire_due()
            if idempotency is not None:
                key, key_name, request_hash = idempotency
                stored = self.idempotency.get((key, key_name))
                if stored is not None:
                    if stored[0] != request_hash:
                        raise governance_error(
                            409,
                            "idempotency_conflict",
                            "This Idempotency-Key was already used with a different request body. Use a new key "
                            "for a new proposal (the SDK makes one per propose() call).",
                            {"decision_id": stored[1]},
                        )
                    return self.entries[stored[1]].decision, True
            self.proposals.append(proposal)
            confirming = bool(proposal.confirmation_token)  # an empty token is no token, as on the server
            decision = self._confirm(proposal) if confirming else self._decide(proposal)
            if idempotency is not None:
                self.idempotency[(idempotency[0], idempotency[1])] = (idempotency[2], decision.decision_id)
            return decision, False

    def check_capability(self, proposal: Proposal) -> None:
        name = proposal.action.capability
        capability = self.capabilities.get(name)
        if capability is None:
            if self.strict_capabilities:
                suggestions = difflib.get_close_matches(name, list(self.capabilities), n=3, cutoff=0.6)
                hint = (
                    "Did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
                    if suggestions
                    else "Register it (FakePlatform.register_capability or POST /api/v1/capabilities) or check "
                    "the spelling."
                )
                self._audit_rejection(proposal, "unknown_capability", {"suggestions": suggestions})
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
            self._audit_rejection(proposal, "invalid_parameters", {"field": field})
            raise governance_error(
                422,
                "invalid_parameters",
                f"Invalid parameters for {name!r}: {field}: {errors[0]['message']}. Fix the parameters to match "
                "the capability's parameter_schema (GET /api/v1/capabilities/{name}).",
                {"capability": name, "field": field, "errors": errors},
            )

    def _audit_rejection(self, proposal: Proposal, code: str, payload: dict[str, Any]) -> None:
        self.append_audit(
            "confirmation_rejected" if proposal.confirmation_token else "proposal_rejected",
            decision_id=payload.get("parent_decision_id"),
            proposal=proposal,
            payload={"code": code, "params_hash": canonical_hash(proposal.action.parameters), **payload},
        )

    def _new_entry(self, proposal: Proposal, decision: Decision, **extra: Any) -> DecisionEntry:
        entry = DecisionEntry(self._next(), decision, proposal, self.now(), **extra)
        self.entries[decision.decision_id] = entry
        return entry

    def _decide(self, proposal: Proposal) -> Decision:
        self.check_capability(proposal)
        scripted, source = self._resolve(proposal)
        outcome = scripted.outcome
        now = self.now()
        decision_id = self._id("dec")
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
            token, expires = self._issue_token(decision_id, proposal)
        elif outcome == "ESCALATE":
            seconds = scripted.review_timeout_seconds or self.review_timeout_seconds
            deadline = expires = now + timedelta(seconds=seconds)
            review = Review(status="pending")
        self.append_audit(
            "proposal",
            decision_id=decision_id,
            proposal=proposal,
            payload={
                "actor_type": proposal.actor.type,
                "parameters": self._audit_parameters(proposal),
                "resource": proposal.action.resource,
            },
        )
        policy_ids = list(scripted.policy_ids) if scripted.policy_ids is not None else [f"fake/{source}"]
        risk = scripted.risk_score if scripted.risk_score is not None else _DEFAULT_RISK[outcome]
        constraints = dict(scripted.constraints or {})
        record = self.append_audit(
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
        self._new_entry(proposal, decision, review_deadline=deadline, auto_review=scripted.auto_review)
        return decision

    def _issue_token(self, decision_id: str, proposal: Proposal) -> tuple[str, datetime]:
        token = "ctok_" + secrets.token_urlsafe(24)
        expires = (self.now() + self.confirmation_ttl).replace(microsecond=0)
        self.tokens[token] = _Token(
            decision_id=decision_id,
            actor_id=proposal.actor.id,
            capability=proposal.action.capability,
            params_hash=canonical_hash(proposal.action.parameters),
            expires_at=expires,
        )
        return token, expires

    def _reject_token(
        self, proposal: Proposal, code: str, parent: str, mismatched: list[str] | None = None
    ) -> ApiError:
        details: dict[str, Any] = {"parent_decision_id": parent}
        if mismatched:
            details["mismatched"] = mismatched
        self._audit_rejection(proposal, code, dict(details))
        messages = {
            "confirmation_used": "This confirmation token was already used; a token allows one action. Propose "
            "again to get a new decision.",
            "confirmation_expired": "This confirmation token has expired. Propose again to get a new decision.",
            "confirmation_mismatch": "This confirmation token was issued for a different "
            + ", ".join(mismatched or ())
            + ". Resubmit exactly the proposal that received the token.",
        }
        return governance_error(409, code, messages[code], details)

    def _confirm(self, proposal: Proposal) -> Decision:
        token = self.tokens.get(proposal.confirmation_token or "")
        if token is None:
            self._audit_rejection(proposal, "confirmation_invalid", {})
            raise governance_error(
                409,
                "confirmation_invalid",
                "The confirmation token was not issued by this platform (or is damaged). Resubmit with the token "
                "exactly as it came in the decision, or propose again without one.",
            )
        parent = token.decision_id
        if token.used:
            raise self._reject_token(proposal, "confirmation_used", parent)
        mismatched = [
            name
            for name, same in (
                ("actor", token.actor_id == proposal.actor.id),
                ("capability", token.capability == proposal.action.capability),
                ("parameters", token.params_hash == canonical_hash(proposal.action.parameters)),
            )
            if not same
        ]
        if mismatched:
            raise self._reject_token(proposal, "confirmation_mismatch", parent, mismatched)
        if self.now() >= token.expires_at:
            raise self._reject_token(proposal, "confirmation_expired", parent)
        token.used = True
        parent_decision = self.entries[parent].decision
        now = self.now()
        decision_id = self._id("dec")
        self.append_audit(
            "proposal",
            decision_id=decision_id,
            proposal=proposal,
            payload={
                "actor_type": proposal.actor.type,
                "parameters": self._audit_parameters(proposal),
                "resource": proposal.action.resource,
                "parent_decision_id": parent,
            },
        )
        review = parent_decision.review
        how = f"approved by {review.reviewer}" if review is not None and review.reviewer else "confirmed with its token"
        reason = f"Decision {parent} was {how}. Original decision: {parent_decision.reason}"
        record = self.append_audit(
            "decision",
            decision_id=decision_id,
            proposal=proposal,
            outcome="ALLOW",
            payload={"outcome": "ALLOW", "reason": reason, "parent_decision_id": parent},
        )
        self.append_audit(
            "confirmation", decision_id=parent, proposal=proposal, payload={"token_consumed_by": decision_id}
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
        self._new_entry(proposal, decision)
        return decision

    # -- decisions and reviews ------------------------------------------------------------------------

    def entry(self, decision_id: str) -> DecisionEntry:
        entry = self.entries.get(decision_id)
        if entry is None:
            raise not_found("decision", decision_id)
        return entry

    def get_decision(self, decision_id: str, *, polled: bool) -> Decision:
        with self.lock:
            self.expire_due()
            entry = self.entry(decision_id)
            pending = entry.decision.review is not None and entry.decision.review.status == "pending"
            if polled and pending and entry.auto_review is not None:
                if entry.auto_review == "expire":
                    self._expire(entry)
                else:
                    approve = entry.auto_review == "approve"
                    self.resolve_review(decision_id, approve=approve, reviewer="fake-auto-reviewer", note=None)
            return entry.decision

    def resolve_review(self, decision_id: str, *, approve: bool, reviewer: str, note: str | None) -> Decision:
        with self.lock:
            self.expire_due()
            entry = self.entry(decision_id)
            review = entry.decision.review
            if entry.decision.outcome != "ESCALATE" or review is None or review.status != "pending":
                raise _not_pending(decision_id, review.status if review is not None else "not_escalated")
            now = self.now()
            status: ReviewStatus = "approved" if approve else "denied"
            changes: dict[str, Any] = {
                "review": Review(status=status, reviewer=reviewer, note=note, resolved_at=rfc3339(now))
            }
            if approve:
                token, expires = self._issue_token(decision_id, entry.proposal)
                changes.update(confirmation_token=token, expires_at=rfc3339(expires))
            else:
                changes["outcome"] = "DENY"  # as the server: a denied escalation is the final DENY
            entry.decision = dataclasses.replace(entry.decision, **changes)
            self.append_audit(
                "review",
                decision_id=decision_id,
                proposal=entry.proposal,
                outcome=None if approve else "DENY",
                payload={"status": status, "reviewer": reviewer, "note": note, "resolved_at": rfc3339(now)},
            )
            return entry.decision

    def expire(self, decision_id: str) -> Decision:
        with self.lock:
            entry = self.entry(decision_id)
            review = entry.decision.review
            if review is None or review.status != "pending":
                raise _not_pending(decision_id, review.status if review is not None else "not_escalated")
            self._expire(entry)
            return entry.decision

    def _expire(self, entry: DecisionEntry) -> None:
        now = self.now()
        entry.decision = dataclasses.replace(
            entry.decision, outcome="DENY", review=Review(status="expired", resolved_at=rfc3339(now))
        )
        self.append_audit(
            "review_expired",
            decision_id=entry.decision.decision_id,
            proposal=entry.proposal,
            outcome="DENY",
            payload={"status": "expired", "final_outcome": "DENY"},
        )

    def expire_due(self) -> None:
        now = self.now()
        for entry in self.entries.values():
            review = entry.decision.review
            deadline = entry.review_deadline
            if review is not None and review.status == "pending" and deadline is not None and now >= deadline:
                self._expire(entry)

    def list_decisions(
        self, filters: DecisionFilters, limit: int, cursor: int | None
    ) -> tuple[list[Decision], int | None]:
        with self.lock:
            self.expire_due()
            found = [e for e in reversed(self.entries.values()) if _matches(e, filters)]
            if cursor is not None:
                found = [e for e in found if e.seq < cursor]
            page = found[:limit]
            more = len(found) > limit
            return [e.decision for e in page], (page[-1].seq if more and page else None)

    def report_execution(self, decision_id: str, report: ExecutionReport) -> ExecutionRecord:
        with self.lock:
            entry = self.entry(decision_id)
            if entry.decision.outcome != "ALLOW":
                raise governance_error(
                    409,
                    "not_allowed",
                    f"Decision {decision_id} is {entry.decision.outcome}, not ALLOW: only an allowed action runs, "
                    "so only an ALLOW decision takes an execution report.",
                    {"decision_id": decision_id, "outcome": entry.decision.outcome},
                )
            if decision_id in self.executions:
                raise governance_error(
                    409,
                    "already_reported",
                    f"The execution of decision {decision_id} was already reported. Report each execution once.",
                    {"decision_id": decision_id},
                )
            self.executions[decision_id] = report
            record = self.append_audit(
                "execution",
                decision_id=decision_id,
                proposal=entry.proposal,
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

    # -- registry and policies ----------------------------------------------------------------------

    def put_capability(self, capability: Capability) -> bool:
        """Register or replace; True when it was new."""
        with self.lock:
            created = capability.name not in self.capabilities
            self.capabilities[capability.name] = capability
            self.append_audit("capability_registered", payload={"name": capability.name, "created": created})
            return created

    def get_capability(self, name: str) -> Capability:
        with self.lock:
            capability = self.capabilities.get(name)
            if capability is None:
                raise not_found("capability", name)
            return capability

    def validate_policies(self, policies: Iterable[Policy]) -> list[PolicyProblem]:
        problems: list[PolicyProblem] = []
        seen: set[str] = set()
        for policy in policies:
            if policy.name in seen:
                problems.append(
                    PolicyProblem(message=f"the policy name {policy.name!r} appears twice", policy=policy.name)
                )
            seen.add(policy.name)
            rule_ids: set[str] = set()
            for index, rule in enumerate(policy.rules):
                rule_id = rule.id or str(index)
                if rule_id in rule_ids:
                    problems.append(
                        PolicyProblem(
                            message=f"the rule id {rule_id!r} appears twice", policy=policy.name, rule=rule_id
                        )
                    )
                rule_ids.add(rule_id)
                if rule.review_timeout_seconds is not None and rule.outcome != "ESCALATE":
                    problems.append(
                        PolicyProblem(
                            message="review_timeout_seconds only applies to ESCALATE rules",
                            policy=policy.name,
                            rule=rule_id,
                        )
                    )
        return problems

    def put_policy(self, policy: Policy, *, create: bool) -> bool:
        """Store a policy (`create`: only if new, else 409); True when it was new."""
        with self.lock:
            created = policy.name not in self.policies
            if create and policy.name in self.policies:
                raise governance_error(
                    409,
                    "policy_conflict",
                    f"A policy named {policy.name!r} already exists. Update it with PUT /api/v1/policies/"
                    f"{policy.name}, or choose another name.",
                    {"policy": policy.name},
                )
            problems = self.validate_policies([*(p for n, p in self.policies.items() if n != policy.name), policy])
            if problems:
                raise governance_error(
                    422,
                    "invalid_policy",
                    "The policy set would not compile: " + "; ".join(p.message for p in problems[:5]) + ".",
                    {"errors": [p.model_dump(mode="json") for p in problems]},
                )
            self.policies[policy.name] = policy
            self.append_audit("policy_updated", payload={"name": policy.name, "created": created})
            return created

    def get_policy(self, name: str) -> Policy:
        with self.lock:
            policy = self.policies.get(name)
            if policy is None:
                raise not_found("policy", name)
            return policy

    def delete_policy(self, name: str) -> None:
        with self.lock:
            if self.policies.pop(name, None) is None:
                raise not_found("policy", name)
            self.append_audit("policy_deleted", payload={"name": name})

    # -- audit queries --------------------------------------------------------------------------------

    def audit_log(
        self, filters: DecisionFilters, limit: int, cursor: int | None
    ) -> tuple[list[AuditRecord], int | None]:
        with self.lock:
            found = [r for r in self.audit if _record_matches(r, filters) and (cursor is None or r.sequence > cursor)]
            page = found[:limit]
            return page, (page[-1].sequence if len(found) > limit and page else None)

    def audit_trail(self, decision_id: str) -> list[AuditRecord]:
        with self.lock:
            self.entry(decision_id)
            return [r for r in self.audit if r.decision_id == decision_id]


def _not_pending(decision_id: str, status: str) -> ApiError:
    return governance_error(
        409,
        "not_pending",
        f"Decision {decision_id} is not awaiting review (status: {status}). Only a pending ESCALATE within its "
        "deadline can be approved or denied.",
        {"decision_id": decision_id, "status": status},
    )


def _as_outcome(answer: OutcomeSpec, defaults: Mapping[str, Any]) -> ScriptedOutcome:
    if isinstance(answer, ScriptedOutcome):
        return answer
    return ScriptedOutcome(answer, **defaults)


def _link_hash(previous: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(previous.encode("ascii") + canonical_json(dict(fields))).hexdigest()


def _in_window(timestamp: datetime, filters: DecisionFilters) -> bool:
    if filters.since is not None and timestamp < filters.since:
        return False
    return not (filters.until is not None and timestamp >= filters.until)


def _matches(entry: DecisionEntry, filters: DecisionFilters) -> bool:
    decision, proposal = entry.decision, entry.proposal
    review_status = decision.review.status if decision.review else None
    checks = (
        (filters.actor_id, proposal.actor.id),
        (filters.capability, proposal.action.capability),
        (filters.outcome, decision.outcome),
        (filters.session_id, proposal.context.session_id),
        (filters.review_status, review_status),
    )
    if any(wanted is not None and wanted != actual for wanted, actual in checks):
        return False
    return _in_window(entry.created_at, filters)


def _record_matches(record: AuditRecord, filters: DecisionFilters) -> bool:
    checks = (
        (filters.actor_id, record.actor_id),
        (filters.capability, record.capability),
        (filters.outcome, record.outcome),
        (filters.session_id, record.session_id),
        (filters.event_type, record.event_type),
        (filters.decision_id, record.decision_id),
    )
    if any(wanted is not None and wanted != actual for wanted, actual in checks):
        return False
    moment = datetime.fromisoformat(record.timestamp.replace("Z", "+00:00"))
    return _in_window(moment, filters)
