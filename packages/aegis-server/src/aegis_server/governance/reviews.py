"""Reviews of ESCALATE decisions: reading a decision (expiring an overdue review first, and long-polling
until a pending review resolves), approving or denying it under separation of duties, and expiring
reviews past their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from aegis_sdk.models import Decision, ReviewRequest
from aegis_server.governance.errors import Conflict, NotFound, SelfReview
from aegis_server.governance.runtime import GovernanceRuntime, parse_time
from aegis_server.store import DecisionBinding
from aegis_server.store import errors as store_errors

__all__ = ["Reviews"]

_DECISION_JSON: TypeAdapter[Decision] = TypeAdapter(Decision)


def _same_person(first: str | None, second: str | None) -> bool:
    """Names that a person could not tell apart: the same after Unicode compatibility normalisation (NFKC),
    case folding and trimming (`Support-Bot-1 ` is `support-bot-1`)."""
    if first is None or second is None:
        return False
    return _person_key(first) == _person_key(second)


def _person_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def _is_pending(decision: Decision) -> bool:
    return decision.review is not None and decision.review.status == "pending"


class Reviews:
    """Reading decisions as their reviews stand, resolving reviews and expiring overdue ones."""

    def __init__(self, runtime: GovernanceRuntime) -> None:
        self.rt = runtime

    async def _load(self, decision_id: str) -> Decision:
        rt = self.rt
        decision = await rt.store.get_decision(decision_id)
        if decision is None:
            raise NotFound("decision", decision_id)
        if _is_pending(decision):
            deadline = parse_time(decision.expires_at)
            now = rt.clock()
            if deadline is not None and now >= deadline:
                await self.expire_due(now)
                refreshed = await rt.store.get_decision(decision_id)
                if refreshed is not None:
                    decision = refreshed
        return decision

    async def get_decision(self, decision_id: str, *, wait: float | None = None) -> Decision:
        """The decision; with `wait`, held until a pending review resolves or the wait (capped by the
        settings) elapses."""
        settings, notifier = self.rt.settings, self.rt.notifier
        decision = await self._load(decision_id)
        budget = min(wait or 0.0, settings.max_wait_seconds)
        if budget <= 0 or not _is_pending(decision):
            return decision
        loop = asyncio.get_running_loop()
        give_up = loop.time() + budget
        event = notifier.subscribe(decision_id)
        try:
            while True:
                remaining = give_up - loop.time()
                if remaining <= 0:
                    return decision
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, settings.long_poll_recheck_seconds))
                event.clear()
                decision = await self._load(decision_id)
                if not _is_pending(decision):
                    return decision
        finally:
            notifier.unsubscribe(decision_id, event)

    async def review(
        self, decision_id: str, request: ReviewRequest, *, reviewer: str, reviewer_key_id: str | None = None
    ) -> Decision:
        """Approve or deny a pending ESCALATE. `reviewer` is recorded (the key's name, or the CLI's
        `--reviewer`); `reviewer_key_id` is the reviewing API key (None: the CLI, which has none).
        Separation of duties (unless `allow_self_review`): the key that proposed the decision, or a reviewer
        named like the decision's actor, gets 403 self_review (audited as "review_rejected")."""
        rt = self.rt
        loaded = await self._load(decision_id)  # 404 for an unknown id; expires an overdue review first
        binding = await rt.store.get_decision_binding(decision_id)
        if binding is None:
            raise NotFound("decision", decision_id)
        if _is_pending(loaded) and not rt.settings.allow_self_review:
            # Only a review that could happen is refused as a self-review; otherwise the 409 below says why not.
            await self._check_separation(binding, reviewer, reviewer_key_id)
        now = rt.clock()
        token: str | None = None
        token_expires: datetime | None = None
        if request.approve:
            token_expires = (now + timedelta(seconds=rt.settings.confirmation_ttl_seconds)).replace(microsecond=0)
            token = rt.signer.issue(
                decision_id=decision_id,
                actor_id=binding.actor_id,
                capability=binding.capability,
                params_hash=binding.params_hash,
                expires_at=token_expires,
            )
        try:
            decision = await rt.store.resolve_review(
                decision_id,
                approve=request.approve,
                reviewer=reviewer,
                note=request.note,
                now=now,
                token=token,
                token_expires_at=token_expires,
                reviewer_key_id=reviewer_key_id,
            )
        except store_errors.NotFound:
            raise NotFound("decision", decision_id) from None
        except store_errors.NotPending as exc:
            if exc.status == "expired":
                rt.metrics.reviews.labels(result="expired").inc()
                rt.notifier.notify(decision_id)
            details: dict[str, Any] = {"decision_id": decision_id, "status": exc.status}
            current = await rt.store.get_decision(decision_id)
            if current is not None and current.review is not None and current.review.reviewer == reviewer:
                # This reviewer resolved it already (e.g. a retry whose first answer was lost on the way):
                # hand back the decision as that first answer had it, so the client can tell.
                details["decision"] = _DECISION_JSON.dump_python(current, mode="json")
            raise Conflict(
                f"Decision {decision_id} is not awaiting review (status: {exc.status}). Only a pending ESCALATE "
                "within its deadline can be approved or denied.",
                details,
                code="not_pending",
            ) from None
        rt.metrics.reviews.labels(result="approved" if request.approve else "denied").inc()
        rt.notifier.notify(decision_id)
        return decision

    async def _check_separation(self, binding: DecisionBinding, reviewer: str, reviewer_key_id: str | None) -> None:
        """Raise 403 self_review (audited) when the reviewer is the proposer: the same API key, or a reviewer
        name equal to the decision's actor id."""
        if reviewer_key_id is not None and binding.api_key_id == reviewer_key_id:
            why = "proposing_key"
            message = (
                f"Decision {binding.decision_id} was proposed with this API key; the key that proposed an action "
                "may not review it (separation of duties). Review it with another reviewer's key (scope "
                "governance:review)."
            )
        elif _same_person(reviewer, binding.actor_id):
            why = "reviewer_is_actor"
            message = (
                f"The reviewer {reviewer!r} is the actor of decision {binding.decision_id}; an actor may not review "
                "its own action (separation of duties). Have another person review it."
            )
        elif binding.api_key_id is not None and _same_person(reviewer, await self._key_name(binding.api_key_id)):
            why = "reviewer_is_proposer"
            message = (
                f"The reviewer {reviewer!r} has the name of the API key that proposed decision "
                f"{binding.decision_id}; whoever proposed an action may not review it (separation of duties). "
                "Have another person review it."
            )
        else:
            return
        await self.rt.audit_refusal(
            "review_rejected",
            "self_review",
            decision_id=binding.decision_id,
            actor_id=binding.actor_id,
            capability=binding.capability,
            session_id=binding.session_id,
            payload={
                "why": why,
                "reviewer": reviewer,
                "api_key_id": reviewer_key_id,
                "reviewer_via": "api" if reviewer_key_id is not None else "cli",
            },
        )
        raise SelfReview(
            message + " For development only, AEGIS_ALLOW_SELF_REVIEW=true allows it.",
            {"decision_id": binding.decision_id, "why": why},
        )

    async def _key_name(self, key_id: str) -> str | None:
        api_key = await self.rt.store.get_api_key(key_id)
        return str(api_key.name) if api_key is not None else None

    async def expire_due(self, now: datetime | None = None) -> list[str]:
        """Expire pending reviews past their deadline (final DENY) and wake their waiters."""
        rt = self.rt
        expired = await rt.store.expire_due_reviews(now or rt.clock())
        for decision_id in expired:
            rt.metrics.reviews.labels(result="expired").inc()
            rt.notifier.notify(decision_id)
        return expired
