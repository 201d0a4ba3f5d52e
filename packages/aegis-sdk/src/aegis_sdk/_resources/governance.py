"""`client.propose()`, `client.confirm()` and `client.wait_for_review()`: asking for a decision and following
it up (call builders and the review wait, no I/O).

A client remembers the proposals behind its pending (REQUIRE_CONFIRMATION / ESCALATE) decisions in a
`ProposalMemory`, so confirming or an approved review resubmits exactly what was proposed. The review wait is
`Steps` (see `_request.py`): the clients only drive it."""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import httpx
import pydantic

from aegis_sdk._constants import MAX_WAIT_SECONDS, PROPOSAL_MEMORY_SIZE, REVIEW_POLL_PAUSE
from aegis_sdk._parsing import parse_decision, request_id
from aegis_sdk._request import BaseClient, Call, Steps
from aegis_sdk._resources.decisions import get_decision_call
from aegis_sdk._validation import check_idempotency_key, check_timeout, dump_model, invalid_input
from aegis_sdk.errors import (
    ConfirmationError,
    InvalidRequestError,
    MalformedResponseError,
    ReviewError,
    ReviewTimeoutError,
)
from aegis_sdk.models import Action, Actor, Context, Decision, Proposal, ReviewStatus

logger = logging.getLogger("aegis_sdk")


class ProposalMemory:
    """Bounded LRU of the proposals behind REQUIRE_CONFIRMATION / ESCALATE decisions, keyed by decision id,
    so `confirm()` and `wait_for_review()` can resubmit exactly what was proposed. Thread-safe."""

    def __init__(self, size: int = PROPOSAL_MEMORY_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, Proposal] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, decision_id: str, proposal: Proposal) -> None:
        with self._lock:
            self._items[decision_id] = proposal
            self._items.move_to_end(decision_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def recall(self, decision_id: str) -> Proposal | None:
        with self._lock:
            proposal = self._items.get(decision_id)
            if proposal is not None:
                self._items.move_to_end(decision_id)
            return proposal

    def forget(self, decision_id: str) -> None:
        with self._lock:
            self._items.pop(decision_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def resubmittable(self, decision: Decision) -> Proposal:
        """The proposal behind `decision`, or ConfirmationError saying how to resubmit it by hand."""
        proposal = self.recall(decision.decision_id)
        if proposal is None:
            raise ConfirmationError(
                f"This client does not remember the proposal behind decision {decision.decision_id} (it was made "
                f"by another client or process, or fell out of the last {PROPOSAL_MEMORY_SIZE} pending "
                "proposals). Resubmit it yourself with the same actor, action and context: "
                "propose(actor, action, context, confirmation_token=decision.confirmation_token).",
                code="proposal_unknown",
            )
        return proposal


# -- propose and confirm ------------------------------------------------------------------------


def propose_call(
    memory: ProposalMemory,
    actor: Actor | Mapping[str, Any],
    action: Action | Mapping[str, Any],
    context: Context | Mapping[str, Any] | None,
    confirmation_token: str | None,
    idempotency_key: str | None,
    timeout: float | None,
) -> Call[Decision]:
    """`propose()` (its arguments in its order): the proposal is checked before anything is sent."""
    fields: dict[str, Any] = {"actor": actor, "action": action}
    if context is not None:
        fields["context"] = context
    try:
        proposal = Proposal.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise invalid_input("proposal", exc) from None
    if confirmation_token is not None and (not isinstance(confirmation_token, str) or not confirmation_token):
        raise InvalidRequestError(
            "confirmation_token must be the non-empty token of a decision (decision.confirmation_token).",
            code="invalid_request",
        )
    return _submit_call(memory, proposal, confirmation_token, check_idempotency_key(idempotency_key), timeout)


def _submit_call(
    memory: ProposalMemory,
    proposal: Proposal,
    token: str | None,
    idempotency_key: str,
    timeout: float | None,
    operation: str = "propose",
) -> Call[Decision]:
    body = dump_model(proposal.model_copy(update={"confirmation_token": token}), "proposal")

    def parse(response: httpx.Response) -> Decision:
        decision = parse_decision(response)
        if decision.outcome in ("REQUIRE_CONFIRMATION", "ESCALATE"):
            memory.remember(decision.decision_id, proposal)
        logger.info(
            "decision %s outcome=%s capability=%s request_id=%s",
            decision.decision_id,
            decision.outcome,
            proposal.action.capability,
            request_id(response),
        )
        return decision

    return Call(
        "POST",
        "/governance/propose",
        parse,
        body=body,
        timeout=check_timeout(timeout),
        idempotency_key=idempotency_key,
        operation=operation,
        capability=proposal.action.capability,
    )


def confirm_call(memory: ProposalMemory, decision: Decision, timeout: float | None) -> Call[Decision]:
    """`confirm()`: resubmit the remembered proposal with the decision's token. The proposal stays remembered
    (until the LRU drops it): a second confirm() of the same decision then reaches the platform, which answers
    with the precise reason (`confirmation_used`)."""
    if not isinstance(decision, Decision):
        raise InvalidRequestError(
            f"confirm() takes the Decision that propose() returned, got {type(decision).__name__}.",
            code="invalid_request",
        )
    token = decision.confirmation_token
    if not token:
        hint = (
            " It is waiting for a reviewer: call wait_for_review(decision) instead."
            if decision.outcome == "ESCALATE"
            else ""
        )
        raise ConfirmationError(
            f"Decision {decision.decision_id} ({decision.outcome}) has no confirmation token, so there is "
            f"nothing to confirm.{hint}",
            code="no_confirmation_token",
        )
    proposal = memory.resubmittable(decision)
    return _submit_call(memory, proposal, token, str(uuid.uuid4()), timeout, "confirm")


def remembered_capability(memory: ProposalMemory, decision: object) -> str | None:
    """The capability of the proposal behind `decision`, if this client remembers it (for the wait's span)."""
    proposal = memory.recall(decision.decision_id) if isinstance(decision, Decision) else None
    return proposal.action.capability if proposal is not None else None


# -- waiting for a review -----------------------------------------------------------------------


def review_steps(
    client: BaseClient, memory: ProposalMemory, decision: Decision, timeout: float | None
) -> Steps[Decision]:
    """`wait_for_review()`: long-poll the decision until a reviewer resolves it; resubmit an approved one."""
    deadline = _begin_review_wait(client, memory, decision, timeout)
    current = decision
    while True:
        status = _review_status(current)
        if status == "approved":
            return (yield from client._attempts(_approved_call(memory, decision, current)))
        if status != "pending":
            memory.forget(decision.decision_id)
            return current
        call, wait = _next_poll(client, decision, current, deadline)
        started = client._clock()
        current = yield from client._attempts(call)
        if _review_status(current) == "pending":
            pause = _poll_pause(client, started, wait, deadline)
            if pause > 0:
                yield pause


def _begin_review_wait(
    client: BaseClient, memory: ProposalMemory, decision: Decision, timeout: float | None
) -> float | None:
    """Check that waiting makes sense; return the monotonic deadline (None: no client-side limit)."""
    if not isinstance(decision, Decision):
        raise InvalidRequestError(
            f"wait_for_review() takes the Decision that propose() returned, got {type(decision).__name__}.",
            code="invalid_request",
        )
    if decision.outcome != "ESCALATE" and not (decision.review and decision.review.status != "pending"):
        raise ReviewError(
            f"Decision {decision.decision_id} is {decision.outcome}, not ESCALATE: there is no review to wait for.",
            code="not_escalated",
        )
    limit = check_timeout(timeout)
    status = _review_status(decision)
    if status in ("pending", "approved"):
        memory.resubmittable(decision)  # fail now, not after the wait, when the proposal cannot be resubmitted
    return None if limit is None else client._clock() + limit


def _review_status(decision: Decision) -> ReviewStatus:
    return decision.review.status if decision.review is not None else "pending"


def _next_poll(
    client: BaseClient, original: Decision, current: Decision, deadline: float | None
) -> tuple[Call[Decision], int]:
    """The next long-poll request and its wait, or ReviewTimeoutError when the deadline has passed."""
    wait = MAX_WAIT_SECONDS
    if deadline is not None:
        remaining = deadline - client._clock()
        if remaining <= 0:
            until = f" (the review deadline is {current.expires_at})" if current.expires_at else ""
            raise ReviewTimeoutError(
                f"No reviewer decided on {original.decision_id} within the wait_for_review() timeout{until}; "
                "the review is still pending. Call wait_for_review() again to keep waiting.",
                decision=current,
                code="review_timeout",
            )
        wait = max(1, min(MAX_WAIT_SECONDS, math.ceil(remaining)))
    return get_decision_call(original.decision_id, wait, client.timeout), wait


def _poll_pause(client: BaseClient, started: float, wait: int, deadline: float | None) -> float:
    """Seconds to pause when the platform answered a long-poll early and the review is still pending."""
    elapsed = client._clock() - started
    if elapsed >= wait:
        return 0.0
    pause = REVIEW_POLL_PAUSE
    if deadline is not None:
        pause = min(pause, max(0.0, deadline - client._clock()))
    return pause


def _approved_call(memory: ProposalMemory, original: Decision, approved: Decision) -> Call[Decision]:
    token = approved.confirmation_token
    if not token:
        raise MalformedResponseError(
            f"The platform reports the review of {original.decision_id} as approved but sent no token.",
            code="malformed_response",
        )
    return _submit_call(memory, memory.resubmittable(original), token, str(uuid.uuid4()), None)


__all__ = ["ProposalMemory", "confirm_call", "propose_call", "remembered_capability", "review_steps"]
