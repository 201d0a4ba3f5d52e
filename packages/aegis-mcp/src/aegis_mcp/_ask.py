"""Asking the user to confirm a call, in either era of the protocol:

- up to 2025-11-25 the server sends `elicitation/create` in the middle of the `tools/call` and awaits the
  answer;
- from 2026-07-28 the `tools/call` answers `InputRequiredResult` carrying the question, and the client calls
  again with the answer and the echoed `requestState` (the client SDKs do this on their own).
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from aegis_mcp._call import ToolCall
from aegis_sdk import Decision

QUESTION_KEY = "aegis_confirmation"
"""The key of AEGIS's question in `InputRequiredResult.input_requests` (and of the answer in `inputResponses`)."""

_ARGUMENTS_SHOWN = 2000

CONFIRMATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "confirm": {
            "type": "boolean",
            "title": "Allow this call",
            "description": "Check to let the tool run with exactly these arguments.",
        }
    },
    "required": ["confirm"],
}


def question_text(call: ToolCall, decision: Decision) -> str:
    """What the user reads: what would run, why AEGIS asks, and how risky it is."""
    arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True, default=str)
    if len(arguments) > _ARGUMENTS_SHOWN:
        arguments = arguments[: _ARGUMENTS_SHOWN - 1] + "…"
    return (
        f"AEGIS asks you to confirm a tool call before it runs.\n"
        f"Tool: {call.tool} (capability {call.capability})\n"
        f"Arguments: {arguments}\n"
        f"Why: {decision.reason}\n"
        f"Risk: {decision.risk_score:.2f}\n"
        f"Decision: {decision.decision_id}"
    )


def can_ask(ctx: ServerRequestContext[Any, Any]) -> bool:
    """True when the client declared form elicitation (an empty `elicitation: {}` means form)."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def asks_by_input_required(ctx: ServerRequestContext[Any, Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def input_required(call: ToolCall, decision: Decision, state: str) -> InputRequiredResult:
    question = ElicitRequest(
        params=ElicitRequestFormParams(message=question_text(call, decision), requested_schema=CONFIRMATION_SCHEMA)
    )
    return InputRequiredResult(input_requests={QUESTION_KEY: question}, request_state=state)


async def ask_now(ctx: ServerRequestContext[Any, Any], call: ToolCall, decision: Decision) -> ElicitResult | None:
    """Ask during the call (2025-11-25 and earlier); None when the client could not be asked."""
    try:
        return await ctx.session.elicit_form(
            question_text(call, decision), CONFIRMATION_SCHEMA, related_request_id=ctx.request_id
        )
    except MCPError:
        return None


def answer_in(params: dict[str, Any]) -> ElicitResult | None:
    """The client's answer to AEGIS's question in a retried call's `inputResponses`, if it gave one."""
    responses = params.get("inputResponses")
    if not isinstance(responses, dict) or QUESTION_KEY not in responses:
        return None
    try:
        return ElicitResult.model_validate(responses[QUESTION_KEY])
    except ValidationError:
        return None


def consented(answer: ElicitResult) -> bool:
    """Only an accepted form with `confirm: true` is consent."""
    return answer.action == "accept" and (answer.content or {}).get("confirm") is True


__all__ = [
    "CONFIRMATION_SCHEMA",
    "QUESTION_KEY",
    "answer_in",
    "ask_now",
    "asks_by_input_required",
    "can_ask",
    "consented",
    "input_required",
    "question_text",
]
