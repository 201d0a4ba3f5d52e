"""A LangGraph pause in the language of LangChain's `HumanInTheLoopMiddleware`: the interrupt value is a
`HITLRequest` (`action_requests`, `review_configs`) with the AEGIS details under the extra key `"aegis"`,
and the resume value is a `HITLResponse` (`{"decisions": [decision]}`) or one bare decision: approve,
edit (`edited_action`) or reject (with a `message`), checked before LangGraph saves it."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, WithJsonSchema

from aegis_sdk import ConfigurationError

if TYPE_CHECKING:
    from aegis_langchain._call import GovernedCall
    from aegis_sdk import Decision

INTERRUPT_KEY = "aegis"
"""The key of the interrupt value that holds the AEGIS details (HITL UIs ignore keys they do not know)."""

PauseKind = Literal["escalation", "confirmation"]
_T = TypeVar("_T")
ALLOWED_DECISIONS = ["approve", "edit", "reject"]

_ACCEPTED = (
    'a HumanInTheLoopMiddleware response {"decisions": [<one decision>]} or one decision: {"type": "approve"}, '
    '{"type": "edit", "edited_action": {"name": <the tool>, "args": {...}}} or {"type": "reject", "message": "..."}'
)


@dataclass(frozen=True)
class Answer:
    """What the person who resumed the graph decided."""

    type: Literal["approve", "edit", "reject"]
    arguments: dict[str, Any] | None = None  # edit: the edited arguments
    message: str | None = None  # reject: the reason the model reads


def pause_request(call: GovernedCall, decision: Decision, kind: PauseKind) -> dict[str, Any]:
    """The interrupt value: a HITLRequest for the one tool call, plus the AEGIS details (no token)."""
    if kind == "escalation" and (call.settings.reviewer is not None or call.settings.async_reviewer is not None):
        description = (
            f"AEGIS escalated {call.capability} for a reviewer's decision: {decision.reason}. Approve records "
            "your approval in AEGIS as the review, edit proposes the edited call to AEGIS again, reject "
            "denies it in AEGIS and tells the model."
        )
    elif kind == "escalation":
        description = (
            f"AEGIS escalated {call.capability} for an operator's review: {decision.reason}. It runs only once "
            "the review is approved in AEGIS; approve checks that review, edit proposes the edited call to "
            "AEGIS again, reject tells the model."
        )
    else:
        description = (
            f"AEGIS asks the user to confirm {call.capability}: {decision.reason}. Approve confirms it to "
            "AEGIS, edit proposes the edited call to AEGIS again, reject tells the model."
        )
    return {
        "action_requests": [{"name": call.tool_name, "args": call.arguments, "description": description}],
        "review_configs": [{"action_name": call.tool_name, "allowed_decisions": list(ALLOWED_DECISIONS)}],
        INTERRUPT_KEY: {
            "kind": kind,
            "decision_id": decision.decision_id,
            "audit_ref": decision.audit_ref,
            "capability": call.capability,
            "tool_call_id": call.tool_call_id,
            "actor_id": call.actor.id,
            "session_id": call.session_id,
            "parameters": call.parameters,
            "reason": decision.reason,
            "risk_score": decision.risk_score,
            "policy_ids": list(decision.policy_ids),
            "expires_at": decision.expires_at,
        },
    }


def read_answer(value: Any, tool_name: str) -> Answer:
    """The resume value as an `Answer`; anything else is a ConfigurationError (`invalid_resume`) saying
    what to send (the graph run fails and the pause can be answered again)."""
    if isinstance(value, Mapping) and "decisions" in value:
        decisions = value["decisions"]
        if not isinstance(decisions, list) or len(decisions) != 1:
            _invalid(f"'decisions' must be a list of exactly one decision (one tool call is paused), got {decisions!r}")
        value = decisions[0]
    if not isinstance(value, Mapping) or value.get("type") not in ALLOWED_DECISIONS:
        _invalid(f"got {_shown(value)}")
    kind = value["type"]
    if kind == "approve":
        return Answer("approve")
    if kind == "reject":
        message = value.get("message")
        if message is not None and not isinstance(message, str):
            _invalid(f"a reject's 'message' must be a string, got {type(message).__name__}")
        return Answer("reject", message=message or None)
    edited = value.get("edited_action")
    if not isinstance(edited, Mapping) or not isinstance(edited.get("args"), Mapping):
        _invalid(f'an edit needs "edited_action": {{"name": {tool_name!r}, "args": {{...}}}}, got {_shown(edited)}')
    if edited.get("name", tool_name) != tool_name:
        _invalid(
            f"an edit may change the arguments of {tool_name!r}, not call another tool ({edited.get('name')!r}): "
            "that would be another action, which the model has to propose"
        )
    return Answer("edit", arguments=dict(edited["args"]))


_DECISION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "properties": {"type": {"const": "approve"}}, "required": ["type"]},
        {
            "type": "object",
            "properties": {
                "type": {"const": "edit"},
                "edited_action": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "args": {"type": "object"}},
                    "required": ["name", "args"],
                },
            },
            "required": ["type", "edited_action"],
        },
        {
            "type": "object",
            "properties": {"type": {"const": "reject"}, "message": {"type": "string"}},
            "required": ["type"],
        },
    ]
}
RESUME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"decisions": {"type": "array", "items": _DECISION_SCHEMA, "minItems": 1, "maxItems": 1}},
            "required": ["decisions"],
        },
        _DECISION_SCHEMA,
    ]
}
"""The JSON schema of a resume value, published with the interrupt (LangGraph's `response_schema`)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"


def _invalid(problem: str) -> NoReturn:
    raise ConfigurationError(
        f"The resume value of an AEGIS pause must be {_ACCEPTED}; {problem}. Resume again with one of these "
        "(with several pauses pending, Command(resume={interrupt.id: value, ...})).",
        code="invalid_resume",
    )


def with_edit_notice(content: Any, tool_name: str, arguments: Mapping[str, Any]) -> Any:
    """The content of an edited call's tool message, with a note for the model: the call that ran is not the
    one in its message (as HumanInTheLoopMiddleware notes a reviewer's edit)."""
    shown = json.dumps(dict(arguments), default=str, ensure_ascii=False)
    notice = (
        f"Note: the person reviewing this call changed it before it ran; {tool_name} ran with the arguments "
        f"{shown}. Do not re-issue your original call."
    )
    if isinstance(content, str):
        return f"{notice}\n\nTool response:\n{content}" if content else notice
    if isinstance(content, list):
        block: Any = notice if all(isinstance(part, str) for part in content) else {"type": "text", "text": notice}
        return [block, *content]
    return content


def pause(call: GovernedCall, decision: Decision, kind: PauseKind) -> tuple[Answer, GovernedCall]:
    """Pause the graph with a HITLRequest; on resume, the person's answer and the call it leaves (the
    edited call for an edit). A resume value that is not a valid answer is refused before LangGraph saves
    it, so the same pause can be answered again."""

    def check(value: Any) -> tuple[Answer, GovernedCall]:
        answer = read_answer(value, call.tool_name)
        if answer.type != "edit":
            return answer, call
        assert call.revise is not None and answer.arguments is not None  # the tool and the middleware set it
        return answer, call.revise(answer.arguments)

    answered: tuple[Answer, GovernedCall] = _interrupt(pause_request(call, decision, kind), check)
    return answered


def _interrupt(value: dict[str, Any], check: Callable[[Any], _T]) -> _T:
    """LangGraph's `interrupt(value)`; the resume value goes through `check`. LangGraph versions with
    `response_schema` run it before they save the value (an error leaves the pause open)."""
    try:
        from langgraph.types import interrupt
    except ImportError:  # pragma: no cover - the extra is part of the workspace
        raise ConfigurationError(
            "Pausing a graph needs LangGraph: pip install 'aegisgov-langchain[langgraph]'.",
            code="langgraph_missing",
        ) from None
    if not _checks_resume_values(interrupt):
        return check(interrupt(value))
    schema = Annotated[Any, AfterValidator(check), WithJsonSchema(RESUME_SCHEMA)]
    answered: _T = interrupt(value, response_schema=schema)
    return answered


@functools.cache
def _checks_resume_values(interrupt: Callable[..., Any]) -> bool:
    return "response_schema" in inspect.signature(interrupt).parameters


__all__ = [
    "ALLOWED_DECISIONS",
    "INTERRUPT_KEY",
    "RESUME_SCHEMA",
    "Answer",
    "PauseKind",
    "pause",
    "pause_request",
    "read_answer",
    "with_edit_notice",
]
