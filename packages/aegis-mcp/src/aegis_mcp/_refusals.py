"""What the MCP client reads when a governed call does not run: a tool result with `isError: true` whose text
says what happened, why, the decision id and what to do next, and whose `_meta` carries the decision. The
upstream tool never sees a refused call."""

from __future__ import annotations

import logging
from typing import Any

from mcp_types import CallToolResult, TextContent

from aegis_mcp._call import ToolCall
from aegis_sdk import (
    AegisError,
    AuthenticationError,
    ConfirmationError,
    Decision,
    ParameterValidationError,
    PermissionDeniedError,
    UnknownCapabilityError,
)

logger = logging.getLogger("aegis_mcp")

META_KEY = "io.aegis/governance"
"""The `_meta` key of a governed call's result: `{decision_id, outcome, capability, risk_score, ...}`."""


def governance_meta(call: ToolCall, decision: Decision | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"capability": call.capability}
    if decision is not None:
        meta.update(
            decision_id=decision.decision_id,
            outcome=decision.outcome,
            reason=decision.reason,
            risk_score=decision.risk_score,
            policy_ids=list(decision.policy_ids),
        )
        if decision.degraded:
            meta["degraded"] = True
    meta.update(extra)
    return meta


class Refusal(Exception):
    """A governed call that will not run; `result` is what the client receives instead."""

    def __init__(self, call: ToolCall, code: str, text: str, decision: Decision | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.decision = decision
        self.result = CallToolResult(
            content=[TextContent(type="text", text=text)],
            is_error=True,
            _meta={META_KEY: governance_meta(call, decision, refused=code)},
        )


def _ref(decision: Decision) -> str:
    return f"decision {decision.decision_id}"


def denied(call: ToolCall, decision: Decision) -> Refusal:
    review = decision.review
    if review is not None and review.status in ("denied", "expired"):
        by = f" by {review.reviewer}" if review.reviewer else ""
        note = f": {review.note}" if review.note else ""
        what = "was denied" + by + note if review.status == "denied" else "expired before anyone reviewed it"
        return Refusal(
            call,
            f"review_{review.status}",
            f"AEGIS refused the tool call {call.tool!r}: the operator review {what} ({_ref(decision)}). "
            "The tool did not run.",
            decision,
        )
    return Refusal(
        call,
        "denied",
        f"AEGIS denied the tool call {call.tool!r}: {decision.reason} ({_ref(decision)}, risk "
        f"{decision.risk_score:.2f}). The tool did not run; do not retry it unchanged.",
        decision,
    )


def declined(call: ToolCall, decision: Decision, action: str) -> Refusal:
    how = {"decline": "declined", "accept": "did not check 'Allow this call'"}.get(action, "dismissed the question")
    return Refusal(
        call,
        "confirmation_declined",
        f"The user {how} when asked to confirm the tool call {call.tool!r} ({decision.reason}; {_ref(decision)}). "
        "The tool did not run.",
        decision,
    )


def cannot_ask(call: ToolCall, decision: Decision, why: str) -> Refusal:
    return Refusal(
        call,
        "confirmation_unavailable",
        f"The tool call {call.tool!r} needs the user's confirmation ({decision.reason}; {_ref(decision)}), and "
        f"{why}. The tool did not run. Use an MCP client that supports elicitation, or ask the operator to "
        "change the policy.",
        decision,
    )


def confirmation_changed(call: ToolCall) -> Refusal:
    return Refusal(
        call,
        "confirmation_mismatch",
        f"The answer to AEGIS's question does not belong to this call of {call.tool!r} (another call, other "
        "arguments, or a question that expired or was already answered). The tool did not run; call it again "
        "to be asked again.",
    )


def resume_changed(call: ToolCall) -> Refusal:
    return Refusal(
        call,
        "resume_mismatch",
        f"The answer to the tool's question does not belong to this call of {call.tool!r} (another call, other "
        "arguments, or a question that expired or was already answered). The tool did not run; call it again.",
    )


def bad_arguments(tool: str) -> CallToolResult:
    """A call whose arguments are not a JSON object: it cannot be proposed, so it does not run."""
    return CallToolResult(
        content=[
            TextContent(
                type="text",
                text=f"The tool call {tool!r} was refused: its arguments must be a JSON object. The tool did not run.",
            )
        ],
        is_error=True,
        _meta={META_KEY: {"refused": "invalid_arguments"}},
    )


_TOKEN_PROBLEMS = {
    "confirmation_expired": "it expired before it reached AEGIS",
    "confirmation_used": "it was already used",
    "confirmation_mismatch": "it does not match this call",
}


def confirmation_refused(call: ToolCall, decision: Decision | None, exc: ConfirmationError) -> Refusal:
    problem = _TOKEN_PROBLEMS.get(exc.code or "", "AEGIS rejected it")
    about = f" ({_ref(decision)})" if decision is not None else ""
    return Refusal(
        call,
        "confirmation_rejected",
        f"The consent to the tool call {call.tool!r}{about} could not be used: {problem}. The tool did not "
        "run; call it again to be asked again.",
        decision,
    )


def still_pending(call: ToolCall, decision: Decision, waited: float, *, reattachable: bool = True) -> Refusal:
    later = (
        "Call the tool again with the same arguments later: the call picks up this review instead of asking for "
        "another one."
        if reattachable
        else "This connection has no MCP session, so calling the tool again asks for a new review."
    )
    return Refusal(
        call,
        "review_pending",
        f"The tool call {call.tool!r} awaits an operator's review in AEGIS ({decision.reason}; {_ref(decision)}); "
        f"no decision came within {waited:g} s, so the tool did not run. {later}",
        decision,
    )


def invalid(call: ToolCall, exc: AegisError) -> Refusal:
    if isinstance(exc, UnknownCapabilityError):
        return Refusal(
            call,
            "unknown_capability",
            f"AEGIS does not know the capability {call.capability!r} of tool {call.tool!r}, so the tool did not "
            "run (fail closed). The operator registers it with `aegis-mcp capabilities --sync` (or maps the "
            "tool to a registered capability).",
        )
    what = (
        "The tool call's arguments do not fit"
        if isinstance(exc, ParameterValidationError)
        else "The tool call is not a valid proposal for"
    )
    return Refusal(
        call,
        "invalid_arguments",
        f"{what} capability {call.capability!r}: {exc.message.rstrip('. ')}. The tool did not run; fix the "
        "arguments and call it again.",
    )


def unavailable(call: ToolCall, exc: AegisError) -> Refusal:
    refused_key = isinstance(exc, (AuthenticationError, PermissionDeniedError))
    logger.error(
        "governance check failed for MCP tool %s (capability %s): %s (%s); the call was refused",
        call.tool,
        call.capability,
        type(exc).__name__,
        exc.code,
    )
    if refused_key:
        why = "the platform refused the proxy's API key"
        scope = exc.details.get("required_scope")
        if scope:
            why = f"the proxy's API key lacks the scope {scope}"
        return Refusal(
            call,
            "governance_misconfigured",
            f"The tool call {call.tool!r} could not be governed: {why}. The tool did not run (fail closed); "
            "the operator must fix the key.",
        )
    return Refusal(
        call,
        "governance_unavailable",
        f"The tool call {call.tool!r} could not be governed: the AEGIS platform did not answer "
        f"({type(exc).__name__}). The tool did not run (fail closed); try again later.",
    )


__all__ = [
    "META_KEY",
    "Refusal",
    "bad_arguments",
    "cannot_ask",
    "confirmation_changed",
    "confirmation_refused",
    "declined",
    "denied",
    "governance_meta",
    "invalid",
    "resume_changed",
    "still_pending",
    "unavailable",
]
