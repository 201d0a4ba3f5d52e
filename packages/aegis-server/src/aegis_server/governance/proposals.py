"""Propose and confirm: a proposal becomes a decision (idempotency → confirmation token or engine →
store), and a confirmation token turns a REQUIRE_CONFIRMATION or an approved ESCALATE into an ALLOW.

Every refusal is audited before it is raised (`GovernanceRuntime.audit_refusal`). An Idempotency-Key is
decided in one place, `Proposals.replay_or_conflict`, for the read before deciding and for the insert
that lost a race alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from aegis_sdk._wire.canonical import canonical_json, normalise_json
from aegis_sdk.models import Decision, Proposal, Review
from aegis_server.engine import ParameterSchemaError, UnknownCapabilityError, evaluate, keyed_digest
from aegis_server.governance.errors import (
    ActorNotAllowed,
    IdempotencyConflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    TokenInvalid,
    UnknownCapability,
)
from aegis_server.governance.runtime import GovernanceRuntime, iso
from aegis_server.ids import new_audit_ref, new_id
from aegis_server.observability.tracing import child_span, decision_attributes
from aegis_server.security import Principal
from aegis_server.store import IdempotencyEntry, NewDecision
from aegis_server.store import errors as store_errors
from aegis_server.tokens import TokenSigner

__all__ = ["Proposals"]

_SAFE_ACTOR_ID = re.compile(r"[A-Za-z0-9._@+-]+")

_TOKEN_MESSAGES = {
    "confirmation_used": "This confirmation token was already used; a token allows one action. Propose again to "
    "get a new decision.",
    "confirmation_expired": "This confirmation token has expired. Propose again to get a new decision.",
}


def _proposal_audit(
    proposal: Proposal, parameters: Mapping[str, Any] | None, params_hash: str, api_key_id: str
) -> dict[str, Any]:
    """The proposal as the audit keeps it: sensitive parameters already hashed by the engine, and the id of
    the API key that proposed it. A confirmed resubmission keeps only the parameters hash (its parent's
    record holds the redacted parameters)."""
    action: dict[str, Any] = {"capability": proposal.action.capability, "params_hash": params_hash}
    if parameters is not None:
        action["parameters"] = dict(parameters)
    if proposal.action.resource is not None:
        action["resource"] = proposal.action.resource
    return {
        "actor": {"id": proposal.actor.id, "type": proposal.actor.type},
        "action": action,
        "context": {"session_id": proposal.context.session_id, "metadata": dict(proposal.context.metadata)},
        "confirmation": proposal.confirmation_token is not None,
        "api_key_id": api_key_id,
    }


def _confirmable(decision: Decision) -> bool:
    """Whether a confirmation token may turn this decision into an ALLOW."""
    if decision.outcome == "REQUIRE_CONFIRMATION":
        return True
    return decision.outcome == "ESCALATE" and decision.review is not None and decision.review.status == "approved"


def _span_attributes(attempt: _Attempt, decision: Decision) -> dict[str, Any]:
    return {**decision_attributes(decision), "aegis.capability": attempt.proposal.action.capability}


@dataclass(frozen=True)
class _Attempt:
    """One proposal being decided or confirmed: what every step needs."""

    proposal: Proposal
    params_hash: str
    api_key_id: str
    now: datetime
    idempotency: IdempotencyEntry | None


class Proposals:
    """`POST /propose`: decide a proposal, or confirm one with its token."""

    def __init__(self, runtime: GovernanceRuntime) -> None:
        self.rt = runtime

    async def propose(
        self, proposal: Proposal, *, principal: Principal, idempotency_key: str | None
    ) -> tuple[Decision, bool]:
        """Decide one proposal. Returns (decision, replayed) — replayed for a repeated Idempotency-Key.
        Refuses (403 actor_not_allowed, audited) a proposal whose actor is outside the key's patterns,
        before anything else: a confirmation-token resubmission or an idempotent retry included."""
        rt = self.rt
        started = time.perf_counter()
        principal_key_id = principal.key_id
        if not principal.actors.allows(proposal.actor.id, proposal.actor.type):
            await self._refuse_actor(proposal, principal)
        params = proposal.action.parameters
        try:
            params_bytes = canonical_json(params)
        except (TypeError, ValueError) as exc:
            rt.metrics.rejected.labels(code="invalid_parameters").inc()
            raise InvalidInput(
                f"The parameters cannot be canonicalised: {exc}.",
                {"field": "(root)", "errors": [{"field": "(root)", "message": str(exc), "validator": "canonical"}]},
                code="invalid_parameters",
            ) from None
        max_bytes = rt.settings.max_parameters_bytes
        if len(params_bytes) > max_bytes:
            rt.metrics.rejected.labels(code="parameters_too_large").inc()
            raise InvalidRequest(
                f"action.parameters is {len(params_bytes)} bytes in canonical JSON; the limit is {max_bytes}. Pass "
                "references (ids, URLs) instead of large values.",
                {"size": len(params_bytes), "max_bytes": max_bytes},
                code="parameters_too_large",
            )
        value_key = rt.value_key
        params_hash = keyed_digest(value_key, params_bytes)
        idempotency: IdempotencyEntry | None = None
        request_hash = ""  # only an Idempotency-Key needs the hash of the whole request
        if idempotency_key:
            request_hash = keyed_digest(value_key, canonical_json(proposal.model_dump(mode="json")))
            found = await rt.store.find_idempotent(principal_key_id, idempotency_key)
            if found is not None:
                return self.replay_or_conflict(found, request_hash), True
            idempotency = IdempotencyEntry(principal_key_id, idempotency_key, request_hash)

        await rt.policies.maybe_refresh()
        attempt = _Attempt(proposal, params_hash, principal_key_id, rt.clock(), idempotency)
        try:
            if proposal.confirmation_token:
                decision = await self._confirm(attempt)
            else:
                decision = await self._decide(attempt)
        except store_errors.IdempotencyConflict as exc:
            # Another request with the same key won the race: answer as a retry would be answered, from what
            # the store's error carries (read back only when the raiser did not read it).
            assert idempotency is not None
            if exc.request_hash is not None and exc.decision is not None:
                found = (exc.request_hash, exc.decision)
            else:
                found = await rt.store.find_idempotent(principal_key_id, idempotency.key)
            if found is None:
                raise
            return self.replay_or_conflict(found, request_hash), True
        rt.metrics.decisions.labels(outcome=decision.outcome).inc()
        if decision.shadow:
            rt.metrics.observe_shadow(decision.outcome, decision.shadow)
        rt.metrics.decision_latency.observe(time.perf_counter() - started)
        return decision, False

    def replay_or_conflict(self, stored: tuple[str, Decision], request_hash: str) -> Decision:
        """The answer to a proposal whose Idempotency-Key is stored with (request_hash, decision): that decision
        for the very same request (a replay), else 409 idempotency_conflict."""
        stored_hash, decision = stored
        if stored_hash != request_hash:
            self.rt.metrics.rejected.labels(code="idempotency_conflict").inc()
            raise IdempotencyConflict(
                "This Idempotency-Key was already used with a different request. Use a new key for a new "
                "proposal; reuse a key only to retry the very same request.",
                {"decision_id": decision.decision_id},
            )
        return decision

    async def _record(
        self,
        attempt: _Attempt,
        decision: Decision,
        *,
        audit_parameters: Mapping[str, Any] | None = None,
        token_expires_at: datetime | None = None,
        review_deadline: datetime | None = None,
        consumes_token_of: str | None = None,
    ) -> Decision:
        """Store the decision of the attempt's proposal with its audit records (see `NewDecision`); a failure
        other than a lost idempotency race or a spent token counts as an audit failure."""
        proposal, params_hash, api_key_id = attempt.proposal, attempt.params_hash, attempt.api_key_id
        record = NewDecision(
            decision=decision,
            actor_id=proposal.actor.id,
            actor_type=proposal.actor.type,
            capability=proposal.action.capability,
            session_id=proposal.context.session_id,
            params_hash=params_hash,
            proposal_audit=_proposal_audit(proposal, audit_parameters, params_hash, api_key_id),
            created_at=attempt.now,
            token_expires_at=token_expires_at,
            review_deadline=review_deadline,
            idempotency=attempt.idempotency,
            consumes_token_of=consumes_token_of,
            api_key_id=api_key_id,
        )
        try:
            with child_span("aegis.commit"):  # the durable write, waiting for its group commit included
                return await self.rt.store.record_decision(record)
        except (store_errors.IdempotencyConflict, store_errors.TokenAlreadyUsed):
            raise
        except Exception:
            self.rt.metrics.audit_failures.inc()
            raise

    async def _refuse_actor(self, proposal: Proposal, principal: Principal) -> NoReturn:
        """Audit and raise the 403 actor_not_allowed of a proposal outside the key's actor patterns."""
        actor = proposal.actor
        bound = principal.actors.bound
        await self._audit_rejection(
            proposal,
            "actor_not_allowed",
            {"actor_type": actor.type, "key_bound": bound},
            principal.key_id,
            event_type="proposal_rejected",
        )
        # The actor id is the caller's text: put it into the suggested command only when it cannot change it.
        safe = len(actor.id) <= 100 and _SAFE_ACTOR_ID.fullmatch(actor.id) is not None
        example = f"--actors '{actor.type}:{actor.id}'" if safe else "--actors 'ai-agent:support-bot-*'"
        if bound:
            message = (
                f"The API key {principal.name!r} ({principal.key_id}) may not propose for the actor "
                f"{actor.type}:{actor.id[:100]!r}; its actor patterns are "
                f"{', '.join(principal.actors.patterns or ())}. Propose with a key bound to this actor, or have an "
                f"admin widen this key's patterns: `aegis-server keys update {principal.key_id} {example}` (or "
                f"PATCH /api/v1/keys/{principal.key_id})."
            )
        else:
            message = (
                f"The API key {principal.name!r} ({principal.key_id}) is bound to no actor (it was made before "
                f"keys were bound to actors, in 0.1), so it may not propose. An admin binds it with "
                f"`aegis-server keys update {principal.key_id} {example}` (or '*' for any actor), or PATCH "
                f"/api/v1/keys/{principal.key_id}."
            )
        raise ActorNotAllowed(
            message,
            {
                "api_key_id": principal.key_id,
                "actor": {"id": actor.id, "type": actor.type},
                "allowed_actors": list(principal.actors.patterns or ()),
            },
        )

    async def _audit_rejection(
        self,
        proposal: Proposal,
        code: str,
        payload: dict[str, Any],
        api_key_id: str,
        *,
        event_type: str | None = None,
    ) -> None:
        if event_type is None:
            event_type = "proposal_rejected" if not proposal.confirmation_token else "confirmation_rejected"
        await self.rt.audit_refusal(
            event_type,
            code,
            decision_id=payload.get("parent_decision_id"),
            actor_id=proposal.actor.id,
            capability=proposal.action.capability,
            session_id=proposal.context.session_id,
            payload={**payload, "api_key_id": api_key_id},
        )

    async def _decide(self, attempt: _Attempt) -> Decision:
        with child_span("aegis.evaluate") as span:
            decision, stored = await self._evaluate(attempt)
            if span is not None:
                span.set_attributes(_span_attributes(attempt, decision))
        return await self._record(attempt, decision, **stored)

    async def _evaluate(self, attempt: _Attempt) -> tuple[Decision, dict[str, Any]]:
        """The engine's decision on a new proposal, and what `_record` stores with it."""
        rt = self.rt
        proposal, params_hash, api_key_id, now = attempt.proposal, attempt.params_hash, attempt.api_key_id, attempt.now
        policy_set = rt.policies.active
        try:
            evaluation = evaluate(proposal, policy_set, now=now, config=rt.engine_config)
        except UnknownCapabilityError as exc:
            await self._audit_rejection(
                proposal,
                "unknown_capability",
                {"params_hash": params_hash, "suggestions": exc.suggestions},
                api_key_id,
            )
            hint = (
                "Did you mean " + " or ".join(repr(s) for s in exc.suggestions) + "?"
                if exc.suggestions
                else "Register it (policy file or POST /api/v1/capabilities) or check the spelling."
            )
            raise UnknownCapability(
                f"Unknown capability {exc.name!r}. {hint}",
                {"capability": exc.name, "suggestions": exc.suggestions},
            ) from None
        except ParameterSchemaError as exc:
            await self._audit_rejection(
                proposal, "invalid_parameters", {"params_hash": params_hash, "field": exc.field}, api_key_id
            )
            raise InvalidInput(
                f"Invalid parameters for {exc.capability!r}: {exc.field}: "
                f"{exc.errors[0]['message'] if exc.errors else 'does not match the schema'}. Fix the parameters "
                "to match the capability's parameter_schema (GET /api/v1/capabilities/{name}).",
                {"capability": exc.capability, "field": exc.field, "errors": exc.errors},
                code="invalid_parameters",
            ) from None

        decision_id = new_id("dec_")
        token: str | None = None
        token_expires: datetime | None = None
        expires_at: str | None = None
        review: Review | None = None
        review_deadline: datetime | None = None
        if evaluation.outcome == "REQUIRE_CONFIRMATION":
            token_expires = (now + timedelta(seconds=rt.settings.confirmation_ttl_seconds)).replace(microsecond=0)
            token = rt.signer.issue(
                decision_id=decision_id,
                actor_id=proposal.actor.id,
                capability=proposal.action.capability,
                params_hash=params_hash,
                expires_at=token_expires,
            )
            expires_at = iso(token_expires)
        elif evaluation.outcome == "ESCALATE":
            timeout = evaluation.review_timeout_seconds or rt.settings.default_review_timeout_seconds
            review_deadline = now + timedelta(seconds=timeout)
            expires_at = iso(review_deadline)
            review = Review(status="pending")
        decision = Decision(
            decision_id=decision_id,
            outcome=evaluation.outcome,
            reason=evaluation.reason,
            risk_score=evaluation.risk_score,
            constraints=normalise_json(evaluation.constraints),  # as stored, so the store answers with it
            timestamp=iso(now),
            audit_ref=new_audit_ref(),
            policy_ids=list(evaluation.policy_ids),
            confirmation_token=token,
            expires_at=expires_at,
            review=review,
            policy_version=policy_set.version,
            shadow=list(evaluation.shadow),
        )
        stored = {
            "audit_parameters": evaluation.audit_parameters,
            "token_expires_at": token_expires,
            "review_deadline": review_deadline,
        }
        return decision, stored

    async def _confirm(self, attempt: _Attempt) -> Decision:
        with child_span("aegis.evaluate") as span:
            decision = await self._confirmed(attempt)
            if span is not None:
                span.set_attributes(_span_attributes(attempt, decision))
        parent_id = decision.parent_decision_id or ""
        try:
            return await self._record(attempt, decision, consumes_token_of=parent_id)
        except store_errors.TokenAlreadyUsed:
            await self._reject_token(attempt, "confirmation_used", parent_id)

    async def _confirmed(self, attempt: _Attempt) -> Decision:
        """The ALLOW a valid confirmation token earns (the token checked against its decision), not stored."""
        rt = self.rt
        proposal, params_hash, api_key_id, now = attempt.proposal, attempt.params_hash, attempt.api_key_id, attempt.now
        token = proposal.confirmation_token or ""
        claims = TokenSigner.parse(token)
        binding = await rt.store.get_decision_binding(claims.decision_id) if claims is not None else None
        if (
            claims is None
            or binding is None
            or not rt.signer.verify(
                claims, actor_id=binding.actor_id, capability=binding.capability, params_hash=binding.params_hash
            )
        ):
            await self._audit_rejection(proposal, "confirmation_invalid", {"params_hash": params_hash}, api_key_id)
            raise TokenInvalid(
                "The confirmation token was not issued by this platform (or is damaged). Resubmit with the "
                "token exactly as it came in the decision, or propose again without one."
            )
        parent_id = claims.decision_id
        if binding.token_used:
            await self._reject_token(attempt, "confirmation_used", parent_id)
        mismatched = [
            name
            for name, same in (
                # The actor is its id and its type: human "alice" and the agent "alice" are two actors.
                ("actor", (binding.actor_id, binding.actor_type) == (proposal.actor.id, proposal.actor.type)),
                ("capability", binding.capability == proposal.action.capability),
                ("parameters", binding.params_hash == params_hash),
                # A token works only for the API key whose proposal earned it: another key that learns it
                # (GET /decisions needs only governance:read) cannot spend it.
                ("api_key", binding.api_key_id in (None, api_key_id)),
            )
            if not same
        ]
        if mismatched:
            await self._reject_token(attempt, "confirmation_mismatch", parent_id, mismatched)
        if now >= claims.expires_at:
            await self._reject_token(attempt, "confirmation_expired", parent_id)

        parent = await rt.store.get_decision(parent_id)
        if parent is None:  # the binding exists, so the decision does too; be strict anyway
            raise NotFound("decision", parent_id)
        if not _confirmable(parent):
            # A token is only ever issued for these; one for another decision was minted with the secret.
            state = parent.outcome + (f" (review {parent.review.status})" if parent.review is not None else "")
            await self._audit_rejection(
                proposal,
                "confirmation_invalid",
                {"parent_decision_id": parent_id, "params_hash": params_hash, "parent_state": state},
                api_key_id,
            )
            raise TokenInvalid(
                f"Decision {parent_id} is {state}: only a REQUIRE_CONFIRMATION decision or an approved ESCALATE "
                "can be confirmed. Propose again to get a new decision.",
                {"parent_decision_id": parent_id},
            )
        how = (
            f"approved by {parent.review.reviewer}"
            if parent.review is not None and parent.review.reviewer
            else "confirmed with its token"
        )
        decision = Decision(
            decision_id=new_id("dec_"),
            outcome="ALLOW",
            reason=f"Decision {parent_id} was {how}. Original decision: {parent.reason}",
            risk_score=parent.risk_score,
            constraints=dict(parent.constraints),
            timestamp=iso(now),
            audit_ref="",
            policy_ids=list(parent.policy_ids),
            parent_decision_id=parent_id,
            policy_version=parent.policy_version,  # decided then, under that version; confirmed now
        )
        return decision

    async def _reject_token(
        self, attempt: _Attempt, code: str, parent_id: str, mismatched: Sequence[str] = ()
    ) -> NoReturn:
        """Audit and raise the 409 of a token that is used, expired, or issued for another proposal."""
        payload: dict[str, Any] = {"parent_decision_id": parent_id, "params_hash": attempt.params_hash}
        details: dict[str, Any] = {"parent_decision_id": parent_id}
        if mismatched:
            payload["mismatched"] = details["mismatched"] = list(mismatched)
        await self._audit_rejection(attempt.proposal, code, payload, attempt.api_key_id)
        message = _TOKEN_MESSAGES.get(code) or (
            f"This confirmation token was issued for a different {', '.join(mismatched)}. Resubmit exactly the "
            "proposal that received the token."
        )
        raise TokenInvalid(message, details, code=code)
