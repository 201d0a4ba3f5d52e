"""The refusals a governed tool raises: each is a LangChain `ToolException` (so `handle_tool_error` turns it
into a message the model can act on) and a `PermissionError` (so `except PermissionError` keeps working)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.tools import ToolException

if TYPE_CHECKING:
    from aegis_langchain._artifact import GovernanceArtifact
    from aegis_sdk import Decision


class GovernanceRefusal(ToolException, PermissionError):
    """AEGIS did not let the tool run. `str(refusal)` is written for the model: what happened and what to
    do next; it names no decision id or audit reference.

    - `capability`: the capability that was proposed.
    - `decision`: the decision that refused (None when no decision could be obtained).
    - `code`: a machine-readable reason: `denied`, `invalid_parameters`, `review_denied`, `review_expired`,
      `confirmation_required`, `confirmation_declined`, `rejected`, `review_pending`, `review_timeout`,
      `unavailable`.
    - `artifact`: the same record a successful call attaches to its tool message (decision id, audit ref).
    """

    capability: str
    decision: Decision | None
    code: str

    def __init__(self, message: str, *, capability: str, code: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.capability = capability
        self.code = code
        self.decision = decision

    @property
    def artifact(self) -> GovernanceArtifact:
        from aegis_langchain._artifact import governance_artifact

        return governance_artifact(self.capability, self.decision, refusal=self.code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.capability, self.code, self.decision))


def _rebuild(
    cls: type[GovernanceRefusal], message: str, capability: str, code: str, decision: Decision | None
) -> GovernanceRefusal:
    return cls(message, capability=capability, code=code, decision=decision)


class ActionDenied(GovernanceRefusal):
    """The action is not allowed: a DENY decision (`denied`), an operator denied the review
    (`review_denied`), nobody reviewed it before the deadline (`review_expired`), or the arguments do not
    fit the capability's parameter schema (`invalid_parameters`, no decision), or the person who resumed a
    LangGraph pause on an escalation rejected the call (`rejected`; the escalation stays pending in AEGIS)."""


class ConfirmationRequired(GovernanceRefusal):
    """A REQUIRE_CONFIRMATION decision that was not confirmed: nobody could be asked (`confirm="refuse"`, or
    `"auto"` outside a graph that can pause: `confirmation_required`), or the callback answered no or the
    person who resumed the pause rejected it (`confirmation_declined`)."""


class ReviewPending(GovernanceRefusal):
    """An ESCALATE decision whose review has not been approved yet: raised at once with
    `on_escalate="raise"` or when a pause was resumed with approve before the operator's review
    (`review_pending`), or after `review_timeout` seconds of waiting (`review_timeout`). The decision stays
    pending on the platform, and the same call retried re-attaches to it."""


class GovernanceUnavailable(GovernanceRefusal):
    """No decision could be obtained (platform unreachable, authentication or server error): the tool did
    not run (fail closed). The SDK error is the `__cause__`."""


__all__ = [
    "ActionDenied",
    "ConfirmationRequired",
    "GovernanceRefusal",
    "GovernanceUnavailable",
    "ReviewPending",
]
