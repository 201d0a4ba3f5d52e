"""The governance of one tool call, written once: propose (or re-attach to the escalation the same call
left pending), confirm, wait for or pause on a review, run the tool under the ALLOW decision and report how
it went. The flow is a generator that yields the I/O it needs (`_drivers`' steps), driven by `run_sync` or
`run_async`: sync and async differ only in those two small loops. A LangGraph pause (`interrupt()`) is no
I/O: it raises, or returns the resume value, in the flow itself."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aegis_langchain._artifact import GovernanceArtifact
from aegis_langchain._call import GovernedCall, current_decision_var
from aegis_langchain._drivers import ClientCall, Flow, PendingStore, ReviewerCall, RunTool, UserCallback
from aegis_langchain._errors import GovernanceRefusal
from aegis_langchain._execution import (
    allowed_artifact,
    elapsed_ms,
    failure_of,
    is_graph_bubble_up,
    report_execution,
)
from aegis_langchain._hitl import pause
from aegis_langchain._pending import PendingEscalations
from aegis_langchain._refusals import (
    already_performed,
    awaiting_operator,
    confirmation_refused,
    declined,
    denied,
    invalid,
    rejected,
    review_not_recorded,
    still_pending,
    unavailable,
)
from aegis_sdk import (
    AegisError,
    ConfirmationError,
    Decision,
    InvalidRequestError,
    ParameterValidationError,
    ReviewTimeoutError,
)
from aegis_sdk._wire.canonical import canonical_json

logger = logging.getLogger("aegis_langchain")


@dataclass(frozen=True)
class Ran:
    """The tool ran under an ALLOW: its output, and the governance record to attach to its message.
    `edited_arguments`: the arguments it ran with when a person edited the call at a pause (else None)."""

    output: Any
    artifact: GovernanceArtifact
    edited_arguments: dict[str, Any] | None = None
    decision: Decision | None = None  # the ALLOW it ran under


@dataclass(frozen=True)
class Refused:
    """Governance refused the call; the tool did not run."""

    refusal: GovernanceRefusal


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------


def governed_run(call: GovernedCall) -> Flow[Ran | Refused]:
    """Govern the call, then run the tool under the ALLOW decision (`current_decision()` inside it) and
    report its execution. A refusal is returned, not raised; the tool's own errors propagate (reported,
    unless they are LangGraph control flow). After an edit resumed a pause, the tool runs the edited call."""
    requested = call
    pending: PendingEscalations = yield PendingStore()
    try:
        call, decision = yield from _govern(call, pending)
    except GovernanceRefusal as refusal:
        return Refused(refusal)
    if not decision.degraded and not pending.claim_run(decision.decision_id):
        return Refused(already_performed(call, decision))
    started = time.perf_counter()
    token = current_decision_var.set(decision)
    try:
        output = yield RunTool(call.invocation)
    except Exception as exc:
        if not is_graph_bubble_up(exc):
            yield from report_execution(call, decision, exc, elapsed_ms(started))
        raise
    finally:
        current_decision_var.reset(token)
    failed = failure_of(output)
    yield from report_execution(call, decision, failed, elapsed_ms(started))
    edited = call.arguments if call is not requested else None
    return Ran(output, allowed_artifact(call, decision, failed), edited, decision)


Governed = Flow[tuple[GovernedCall, Decision]]
"""A flow ending in the call to run (edited, if a person edited it) and its ALLOW decision."""


def _govern(call: GovernedCall, pending: PendingEscalations) -> Governed:
    """The ALLOW decision the tool may run under, or raise a GovernanceRefusal. The same call retried
    re-attaches to the escalation it left pending; in a graph that can pause, the proposal's
    Idempotency-Key makes a resumed run meet the same decision again."""
    earlier = yield from _reattach(call, pending)
    if earlier is not None:
        return (yield from _escalated(call, earlier, pending, new=False))
    decision = yield from _propose(call, idempotency_key=call.resume_key)
    return (yield from _decided(call, decision, pending))


def _decided(call: GovernedCall, decision: Decision, pending: PendingEscalations) -> Governed:
    if decision.outcome == "ALLOW":
        return call, decision
    if decision.outcome == "REQUIRE_CONFIRMATION":
        return (yield from _confirmation(call, decision, pending))
    if decision.outcome == "ESCALATE":
        return (yield from _escalated(call, decision, pending, new=True))
    raise denied(call, decision)


def _reattach(call: GovernedCall, pending: PendingEscalations) -> Flow[Decision | None]:
    """The escalation this call left pending, read again: still pending or approved → re-attach to it;
    denied → that refusal; expired or unreadable → None (propose anew)."""
    decision_id = pending.find(call)
    if decision_id is None:
        return None
    try:
        current: Decision = yield ClientCall("decisions.get", (decision_id,))
    except AegisError:
        pending.forget(call, decision_id)
        return None
    status = _review_status(current)
    if status in (None, "pending", "approved"):
        logger.info("tool %s: re-attached to decision %s (review %s)", call.tool_name, decision_id, status or "pending")
        return current
    pending.forget(call, decision_id)
    if status == "denied":
        raise denied(call, current)
    return None


def _propose(call: GovernedCall, *, token: str | None = None, idempotency_key: str | None = None) -> Flow[Decision]:
    options = {"confirmation_token": token, "idempotency_key": idempotency_key}
    try:
        decision: Decision = yield ClientCall("propose", (call.actor, call.action(), call.context()), options)
    except (ParameterValidationError, InvalidRequestError) as exc:
        raise invalid(call, exc) from exc
    except ConfirmationError as exc:
        raise confirmation_refused(call, exc) from exc
    except AegisError as exc:
        raise unavailable(call, exc) from exc
    _log_decision(call, decision)
    return decision


def _allowed(call: GovernedCall, *, token: str | None, idempotency_key: str | None = None) -> Flow[Decision]:
    """Propose again with a confirmation token: the result must be an ALLOW."""
    decision = yield from _propose(call, token=token, idempotency_key=idempotency_key)
    if decision.outcome != "ALLOW":
        raise denied(call, decision)
    return decision


def _derived_key(call: GovernedCall, purpose: str, part: Any) -> str | None:
    """An Idempotency-Key for a later proposal of a call that can pause (a resumed run sends it again)."""
    if call.resume_key is None:
        return None
    digest = hashlib.sha256(canonical_json(part)).hexdigest()[:24]
    return f"{call.resume_key}-{purpose}-{digest}"


# -- REQUIRE_CONFIRMATION ------------------------------------------------------------------------


def _confirmation(call: GovernedCall, decision: Decision, pending: PendingEscalations) -> Governed:
    confirm = call.settings.confirm
    if callable(confirm):
        if not (yield UserCallback("confirm", confirm, decision)):
            raise declined(call, decision)
        return call, (yield from _allowed(call, token=decision.confirmation_token))
    if confirm == "refuse" or not call.can_pause:
        if confirm == "interrupt":
            logger.warning("tool %s: confirm='interrupt' outside a graph that can pause; refusing", call.tool_name)
        raise denied(call, decision)
    answer, edited = pause(call, decision, "confirmation")
    if answer.type == "reject":
        raise declined(call, decision, answer.message)
    if answer.type == "edit":
        return (yield from _edited(call, edited, pending))
    # The user's consent: confirm with the decision's token; the platform answers.
    key = _derived_key(call, "confirmed", decision.decision_id)
    return call, (yield from _allowed(call, token=decision.confirmation_token, idempotency_key=key))


# -- ESCALATE ----------------------------------------------------------------------------------------


def _escalation_mode(call: GovernedCall) -> str:
    mode = call.settings.on_escalate
    if mode == "auto":
        return "interrupt" if call.can_pause else "wait"
    return mode


def _escalated(call: GovernedCall, decision: Decision, pending: PendingEscalations, *, new: bool) -> Governed:
    mode = _escalation_mode(call)
    if mode == "interrupt" and call.can_pause:
        # Always through the pause, whatever the review's status now: a resumed run replays the answer given
        # at this pause, and a reject given there must not turn into a run because AEGIS approved since.
        return (yield from _paused_escalation(call, decision, pending))
    if _review_status(decision) == "approved":
        return call, (yield from _approved(call, decision, pending))
    if new and call.settings.on_escalation is not None:
        yield UserCallback("on_escalation", call.settings.on_escalation, decision)
    if mode == "raise":
        pending.remember(call, decision.decision_id)
        raise denied(call, decision)
    if mode == "interrupt":
        pending.remember(call, decision.decision_id)
        raise still_pending(call, decision, timed_out=False)
    try:
        final: Decision = yield ClientCall("wait_for_review", (decision,), {"timeout": call.settings.review_timeout})
    except ReviewTimeoutError as exc:
        pending.remember(call, decision.decision_id)
        raise still_pending(call, exc.decision, timed_out=True) from None
    except ConfirmationError as exc:
        if new or exc.code != "proposal_unknown":
            raise unavailable(call, exc) from exc
        # Re-attached, but this client no longer remembers the proposal to resubmit: propose anew.
        pending.forget(call, decision.decision_id)
        return (yield from _decided(call, (yield from _propose(call)), pending))
    except AegisError as exc:
        raise unavailable(call, exc) from exc
    pending.forget(call, decision.decision_id)
    _log_decision(call, final)
    if final.outcome == "ALLOW":
        return call, final
    raise denied(call, final)


def _approved(call: GovernedCall, decision: Decision, pending: PendingEscalations) -> Flow[Decision]:
    """Resubmit an approved escalation with its token: the platform answers with the ALLOW."""
    pending.forget(call, decision.decision_id)
    key = _derived_key(call, "approved", decision.decision_id)
    return (yield from _allowed(call, token=decision.confirmation_token, idempotency_key=key))


def _paused_escalation(call: GovernedCall, decision: Decision, pending: PendingEscalations) -> Governed:
    """Pause the graph on the escalation. Approve never bypasses the platform: the tool runs only if the
    review is approved in AEGIS — by an operator, or by the answer itself submitted as a review with the
    `reviewer=` key; still pending → the model reads that it awaits the operator."""
    answer, edited = pause(call, decision, "escalation")
    reviewing = call.settings.reviewer is not None or call.settings.async_reviewer is not None
    if answer.type == "reject":
        if reviewing:
            yield from _reviewed(call, decision, approve=False, note=answer.message)
        else:
            pending.remember(call, decision.decision_id)
        raise rejected(call, decision, answer.message)
    if answer.type == "edit":
        return (yield from _edited(call, edited, pending))
    if reviewing:
        yield from _reviewed(call, decision, approve=True, note=f"approved at the pause of {call.tool_name}")
    try:
        current: Decision = yield ClientCall("decisions.get", (decision.decision_id,))
    except AegisError as exc:
        raise unavailable(call, exc) from exc
    status = _review_status(current)
    if status == "approved":
        return call, (yield from _approved(call, current, pending))
    if status in (None, "pending"):
        pending.remember(call, decision.decision_id)
        raise awaiting_operator(call, current)
    raise denied(call, current)


def _reviewed(call: GovernedCall, decision: Decision, *, approve: bool, note: str | None) -> Flow[None]:
    """Submit the pause's answer to AEGIS as a review with the reviewer's key, held to the platform's rules.
    Already decided (`not_pending`): the platform's state stands. A refused approval leaves the escalation
    pending (raised); a refused rejection is logged, and the call is rejected all the same."""
    review = ClientCall("decisions.review", (decision.decision_id,), {"approve": approve, "note": note})
    try:
        yield ReviewerCall(review, call.settings.reviewer, call.settings.async_reviewer)
    except AegisError as exc:
        if exc.code == "not_pending":
            return
        if approve:
            raise review_not_recorded(call, decision, exc) from exc
        logger.warning(
            "tool %s: the rejection given at the pause was not recorded as a review of decision %s (%s)",
            call.tool_name,
            decision.decision_id,
            exc.code,
        )


# -- pauses -------------------------------------------------------------------------------------------


def _edited(call: GovernedCall, edited: GovernedCall, pending: PendingEscalations) -> Governed:
    """A new proposal with the edited arguments, governed from scratch (it may pause again)."""
    decision = yield from _propose(edited, idempotency_key=_derived_key(call, "edit", edited.parameters))
    return (yield from _decided(edited, decision, pending))


def _log_decision(call: GovernedCall, decision: Decision) -> None:
    logger.info(
        "tool %s capability %s: decision %s outcome=%s",
        call.tool_name,
        call.capability,
        decision.decision_id,
        decision.outcome,
    )


def _review_status(decision: Decision) -> str | None:
    return decision.review.status if decision.review is not None else None


__all__ = ["Governed", "Ran", "Refused", "governed_run"]
