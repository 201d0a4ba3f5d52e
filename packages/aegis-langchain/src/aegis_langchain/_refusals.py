"""The refusal of a governed call for each way it may not run (a decision's outcome or review, a declined
confirmation, a timeout, an SDK error), worded for the model: what happened and what to do next."""

from __future__ import annotations

import logging
from typing import TypeVar

from aegis_langchain._call import GovernedCall
from aegis_langchain._errors import (
    ActionDenied,
    ConfirmationRequired,
    GovernanceRefusal,
    GovernanceUnavailable,
    ReviewPending,
)
from aegis_sdk import (
    AegisError,
    AuthenticationError,
    ConfirmationError,
    Decision,
    InvalidRequestError,
    ParameterValidationError,
    PermissionDeniedError,
)

logger = logging.getLogger("aegis_langchain")

_R = TypeVar("_R", bound=GovernanceRefusal)


def _refusal(
    kind: type[_R],
    call: GovernedCall,
    code: str,
    message: str,
    decision: Decision | None = None,
    cause: AegisError | None = None,
) -> _R:
    refusal = kind(message, capability=call.capability, code=code, decision=decision)
    if cause is not None:
        refusal.__cause__ = cause
    return refusal


def unavailable(call: GovernedCall, exc: AegisError) -> GovernanceUnavailable:
    """No decision could be obtained: the tool does not run (fail closed). A key the platform refused is
    the operator's to fix, not an outage: the message says so."""
    refused_key = isinstance(exc, (AuthenticationError, PermissionDeniedError))
    scope = exc.details.get("required_scope") if refused_key else None
    logger.error(
        "governance check failed for tool %s (capability %s): %s%s; the tool did not run",
        call.tool_name,
        call.capability,
        type(exc).__name__,
        f" (the API key lacks {scope})" if scope else "",
    )
    if refused_key:
        why = f"its API key lacks the scope {scope}" if scope else "its API key was refused"
        return _refusal(
            GovernanceUnavailable,
            call,
            "misconfigured",
            f"{call.tool_name} could not be checked with the governance platform: {why}, which the operator has "
            "to fix. The action was not performed; do not try to work around the check.",
            cause=exc,
        )
    return _refusal(
        GovernanceUnavailable,
        call,
        "unavailable",
        f"{call.tool_name} could not be checked with the governance platform ({type(exc).__name__}), so the "
        "action was not performed. It may work later; do not try to work around the check.",
        cause=exc,
    )


def invalid(call: GovernedCall, exc: ParameterValidationError | InvalidRequestError) -> ActionDenied:
    """The arguments do not fit the capability's parameter schema, or the proposal built from them is
    invalid (caught by the SDK before sending, or by the platform)."""
    field_name = exc.details.get("field") if isinstance(exc.details, dict) else None
    where = f" (field {field_name!r})" if field_name else ""
    return _refusal(
        ActionDenied,
        call,
        "invalid_parameters",
        f"The arguments of {call.tool_name} do not fit what the governance platform accepts for "
        f"{call.capability}{where}: {exc.message} The action was not performed; correct the arguments.",
        cause=exc,
    )


def confirmation_refused(call: GovernedCall, exc: ConfirmationError) -> ActionDenied:
    """The platform did not take the confirmation (expired, already used): nothing ran; asking again may."""
    return _refusal(
        ActionDenied,
        call,
        exc.code or "confirmation_invalid",
        f"The confirmation of {call.tool_name} was not accepted by the governance platform ({exc.code}), so "
        "the action was not performed. Call the tool again to ask for a new confirmation.",
        cause=exc,
    )


def already_performed(call: GovernedCall, decision: Decision) -> ActionDenied:
    """The ALLOW this call met again was already spent by an earlier run of the same step."""
    logger.warning(
        "tool %s: decision %s was already used to run the tool in this process (a re-run of the same step); "
        "not run again",
        call.tool_name,
        decision.decision_id,
    )
    return _refusal(
        ActionDenied,
        call,
        "already_performed",
        f"{call.tool_name} was already performed under decision {decision.decision_id} (this run repeats an "
        "earlier step of the thread), so it was not performed again. Call it anew only if it must run again.",
        decision,
    )


def denied(call: GovernedCall, decision: Decision) -> GovernanceRefusal:
    """The refusal of a decision that is not (or not yet) an ALLOW."""
    status = decision.review.status if decision.review is not None else None
    name = call.tool_name
    if status == "denied":
        note = f" Reviewer's note: {decision.review.note}" if decision.review and decision.review.note else ""
        return _refusal(
            ActionDenied,
            call,
            "review_denied",
            f"An operator denied {name}; the action was not performed.{note} Do not retry it unchanged.",
            decision,
        )
    if status == "expired":
        return _refusal(
            ActionDenied,
            call,
            "review_expired",
            f"{name} needed an operator's approval and nobody approved it before the review deadline; the action "
            "was not performed.",
            decision,
        )
    if status == "pending" or decision.outcome == "ESCALATE":
        return _refusal(
            ReviewPending,
            call,
            "review_pending",
            f"{name} is waiting for an operator's review ({decision.reason}); the action has not been "
            "performed. Tell the user it is pending approval.",
            decision,
        )
    if decision.outcome == "REQUIRE_CONFIRMATION":
        return _refusal(
            ConfirmationRequired,
            call,
            "confirmation_required",
            f"{name} needs the user's explicit confirmation ({decision.reason}); the action was not "
            "performed. Ask the user to confirm.",
            decision,
        )
    return _refusal(
        ActionDenied,
        call,
        "denied",
        f"The governance policy denied {name}: {decision.reason}. The action was not performed; do "
        "not retry it unchanged.",
        decision,
    )


def declined(call: GovernedCall, decision: Decision, message: str | None = None) -> ConfirmationRequired:
    """The `confirm` callback answered no, or the person who resumed the pause rejected it."""
    reason = f" Their reason: {message}" if message else ""
    return _refusal(
        ConfirmationRequired,
        call,
        "confirmation_declined",
        f"The user did not confirm {call.tool_name}; the action was not performed.{reason}",
        decision,
    )


def rejected(call: GovernedCall, decision: Decision, message: str | None) -> ActionDenied:
    """The person who resumed an escalation's pause rejected the call (it stays pending in AEGIS)."""
    if message:
        text = f"User rejected the tool call for `{call.tool_name}` with reason: {message}"
    else:
        text = (
            f"User rejected the tool call for `{call.tool_name}`. The tool was not executed. Do not retry this "
            "tool call unless the user explicitly requests it."
        )
    return _refusal(ActionDenied, call, "rejected", text, decision)


def awaiting_operator(call: GovernedCall, decision: Decision) -> ReviewPending:
    """The pause was resumed with approve, but the operator's review in AEGIS is still pending."""
    return _refusal(
        ReviewPending,
        call,
        "review_pending",
        f"{call.tool_name} also needs an operator's approval in AEGIS ({decision.reason}), which has not been "
        "given yet; the action has not been performed. Tell the user it awaits that approval; calling it again "
        "with the same arguments picks up the same request.",
        decision,
    )


def review_not_recorded(call: GovernedCall, decision: Decision, exc: AegisError) -> ReviewPending:
    """The pause was resumed with approve, but AEGIS did not take it as a review (the reviewer key lacks
    `governance:review`, or it proposed the call itself): the escalation still waits for an operator."""
    logger.error(
        "tool %s: the approval given at the pause could not be recorded as a review of decision %s (%s %s); "
        "check the reviewer= key (governance:review, not the proposing key)",
        call.tool_name,
        decision.decision_id,
        type(exc).__name__,
        exc.code,
    )
    return _refusal(
        ReviewPending,
        call,
        "review_not_recorded",
        f"The approval of {call.tool_name} could not be recorded in AEGIS ({exc.code}), so the action has not "
        "been performed; it still awaits an operator's approval. Tell the user.",
        decision,
        cause=exc,
    )


def still_pending(call: GovernedCall, decision: Decision, *, timed_out: bool) -> ReviewPending:
    """An escalation nobody approved in `review_timeout` (`timed_out`), or that cannot pause the graph."""
    if timed_out:
        return _refusal(
            ReviewPending,
            call,
            "review_timeout",
            f"{call.tool_name} needs an operator's approval ({decision.reason}) and none arrived in time; the "
            "action has not been performed and the request stays pending. Tell the user it awaits approval; "
            "calling it again with the same arguments picks up the same request.",
            decision,
        )
    logger.warning(
        "tool %s: on_escalate='interrupt' outside a LangGraph run that can pause (a checkpointer and a "
        "thread_id); refusing",
        call.tool_name,
    )
    return _refusal(
        ReviewPending,
        call,
        "review_pending",
        f"{call.tool_name} needs an operator's approval ({decision.reason}); the action has not been performed "
        "and the request stays pending. Tell the user it awaits approval.",
        decision,
    )


__all__ = [
    "already_performed",
    "awaiting_operator",
    "confirmation_refused",
    "declined",
    "denied",
    "invalid",
    "rejected",
    "review_not_recorded",
    "still_pending",
    "unavailable",
]
