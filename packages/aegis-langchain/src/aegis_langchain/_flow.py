"""The governance of one tool call, written once: propose (or re-attach to the escalation the same call
left pending), confirm, wait for or pause on a review, run the tool under the ALLOW decision and report how
it went. The flow is a generator that yields the I/O it needs (a client call, a user callback, the tool's
run) and is driven by `run_sync` with an `AegisClient` or by `run_async` with an `AsyncAegisClient`
(never a thread hop around a sync call): sync and async differ only in those two small loops. A LangGraph
pause (`interrupt()`) is no I/O: it raises, or returns the resume value, in the flow itself."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, WithJsonSchema

from aegis_langchain._artifact import GovernanceArtifact, governance_artifact
from aegis_langchain._call import GovernedCall, current_decision_var
from aegis_langchain._errors import GovernanceRefusal
from aegis_langchain._hitl import RESUME_SCHEMA, Answer, PauseKind, pause_request, read_answer
from aegis_langchain._pending import PendingEscalations, pending_escalations
from aegis_langchain._refusals import (
    awaiting_operator,
    declined,
    denied,
    invalid,
    rejected,
    still_pending,
    unavailable,
)
from aegis_sdk import (
    AegisClient,
    AegisError,
    AsyncAegisClient,
    ConfigurationError,
    ConfirmationError,
    Decision,
    ParameterValidationError,
    ReviewTimeoutError,
)
from aegis_sdk._wire.canonical import canonical_json

logger = logging.getLogger("aegis_langchain")

_ERROR_MESSAGE_LIMIT = 1000
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# What the flow asks its driver to do
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCall:
    """Call `client.<method>(*args, **kwargs)` (a dotted method, e.g. `decisions.get`) and send back the
    result; an error is thrown back into the flow."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def bound(self, client: object) -> Callable[[], Any]:
        target: Any = client
        for name in self.method.split("."):
            target = getattr(target, name)
        return lambda: target(*self.args, **self.kwargs)


@dataclass(frozen=True)
class UserCallback:
    """Call a user callback (`confirm`, `on_escalation`), which may be sync or async, with the decision."""

    name: str
    func: Callable[[Decision], Any]
    decision: Decision


@dataclass(frozen=True)
class RunTool:
    """Run the governed tool (or the agent's tool handler) for `invocation` (the call's, or the edited
    call's) and send back its output."""

    invocation: Any


@dataclass(frozen=True)
class PendingStore:
    """Send back the escalations the driver's client left pending (`pending_escalations(client)`)."""


Step = ClientCall | UserCallback | RunTool | PendingStore
Flow = Generator[Step, Any, _T]


@dataclass(frozen=True)
class Ran:
    """The tool ran under an ALLOW: its output, and the governance record to attach to its message."""

    output: Any
    artifact: GovernanceArtifact


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
    try:
        call, decision = yield from _govern(call)
    except GovernanceRefusal as refusal:
        return Refused(refusal)
    started = time.perf_counter()
    token = current_decision_var.set(decision)
    try:
        output = yield RunTool(call.invocation)
    except Exception as exc:
        if not is_graph_bubble_up(exc):
            yield from _report(call, decision, exc, _ms(started))
        raise
    finally:
        current_decision_var.reset(token)
    failed = failure_of(output)
    ref = yield from _report(call, decision, failed, _ms(started))
    return Ran(output, allowed_artifact(call, decision, failed, ref))


Governed = Flow[tuple[GovernedCall, Decision]]
"""A flow ending in the call to run (edited, if a person edited it) and its ALLOW decision."""


def _govern(call: GovernedCall) -> Governed:
    """The ALLOW decision the tool may run under, or raise a GovernanceRefusal. The same call retried
    re-attaches to the escalation it left pending; in a graph that can pause, the proposal's
    Idempotency-Key makes a resumed run meet the same decision again."""
    pending: PendingEscalations = yield PendingStore()
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
    except ParameterValidationError as exc:
        raise invalid(call, exc) from exc
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
    answer, edited = _ask(call, decision, "confirmation")
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
    review is approved in AEGIS; still pending → the model reads that it awaits the operator."""
    answer, edited = _ask(call, decision, "escalation")
    if answer.type == "reject":
        pending.remember(call, decision.decision_id)
        raise rejected(call, decision, answer.message)
    if answer.type == "edit":
        return (yield from _edited(call, edited, pending))
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


# -- pauses -------------------------------------------------------------------------------------------


def _ask(call: GovernedCall, decision: Decision, kind: PauseKind) -> tuple[Answer, GovernedCall]:
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


def _edited(call: GovernedCall, edited: GovernedCall, pending: PendingEscalations) -> Governed:
    """A new proposal with the edited arguments, governed from scratch (it may pause again)."""
    decision = yield from _propose(edited, idempotency_key=_derived_key(call, "edit", edited.parameters))
    return (yield from _decided(edited, decision, pending))


def _report(call: GovernedCall, decision: Decision, error: BaseException | None, ms: float) -> Flow[str | None]:
    """Report the execution of an allowed call; returns the audit ref, or None (errors are logged)."""
    if not call.settings.report_execution or decision.degraded:
        return None
    try:
        record = yield ClientCall("decisions.report_execution", (decision.decision_id,), _report_fields(error, ms))
    except AegisError as exc:
        logger.warning(
            "could not report the execution of decision %s (tool %s): %s",
            decision.decision_id,
            call.tool_name,
            type(exc).__name__,
        )
        return None
    ref: str | None = record.audit_ref
    return ref


def _report_fields(error: BaseException | None, ms: float) -> dict[str, Any]:
    if error is None:
        return {"status": "SUCCESS", "duration_ms": max(ms, 0.0)}
    message = str(error)
    if len(message) > _ERROR_MESSAGE_LIMIT:
        message = message[: _ERROR_MESSAGE_LIMIT - 1] + "…"
    return {
        "status": "FAILED",
        "error": {"code": type(error).__name__, "message": message},
        "duration_ms": max(ms, 0.0),
    }


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


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


# ---------------------------------------------------------------------------------------------
# What an execution reports
# ---------------------------------------------------------------------------------------------


def allowed_artifact(
    call: GovernedCall, decision: Decision, error: BaseException | None, execution_ref: str | None
) -> GovernanceArtifact:
    """The governance record of a call that ran: the ALLOW decision and the execution report."""
    artifact = governance_artifact(call.capability, decision)
    if call.settings.report_execution:
        artifact["execution"] = "SUCCESS" if error is None else "FAILED"
    artifact["execution_audit_ref"] = execution_ref
    return artifact


class ToolError(Exception):
    """Stands, in an execution report, for a tool call that ended in an error ToolMessage (the tool or the
    tool node turned its exception into a message, so the original type is not known)."""


def failure_of(output: Any) -> BaseException | None:
    """The failure to report for a tool output: an error ToolMessage is a failure."""
    from langchain_core.messages import ToolMessage

    if isinstance(output, ToolMessage) and output.status == "error":
        return ToolError(f"the tool returned an error message: {output.content}")
    return None


def is_graph_bubble_up(exc: BaseException) -> bool:
    """LangGraph's control-flow exceptions (interrupts, parent commands) are not tool failures."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - the extra is part of the workspace
        return False
    return isinstance(exc, GraphBubbleUp)


# ---------------------------------------------------------------------------------------------
# The two drivers: the only places that differ between sync and async
# ---------------------------------------------------------------------------------------------


def run_sync(flow: Flow[_T], client: AegisClient, run: Callable[[Any], Any] | None = None) -> _T:
    """Drive `flow` with the sync client; `run` runs the tool."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            value: _T = stop.value
            return value
        result, error = None, None
        try:
            if isinstance(step, ClientCall):
                result = step.bound(client)()
            elif isinstance(step, UserCallback):
                answer = step.func(step.decision)
                result = _run_awaitable(answer, step.name) if inspect.isawaitable(answer) else answer
            elif isinstance(step, PendingStore):
                result = pending_escalations(client)
            else:
                assert run is not None
                result = run(step.invocation)
        except BaseException as exc:
            error = exc


async def run_async(flow: Flow[_T], client: AsyncAegisClient, run: Callable[[Any], Awaitable[Any]] | None = None) -> _T:
    """Drive `flow` with the async client; `run` runs the tool."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            value: _T = stop.value
            return value
        result, error = None, None
        try:
            if isinstance(step, ClientCall):
                result = await step.bound(client)()
            elif isinstance(step, UserCallback):
                answer = step.func(step.decision)
                result = await answer if inspect.isawaitable(answer) else answer
            elif isinstance(step, PendingStore):
                result = pending_escalations(client)
            else:
                assert run is not None
                result = await run(step.invocation)
        except BaseException as exc:
            error = exc


def _run_awaitable(awaitable: Awaitable[Any], name: str) -> Any:
    """An async callback of a sync call: run it when no event loop is running, else refuse."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def _await() -> Any:
            return await awaitable

        return asyncio.run(_await())
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
    raise ConfigurationError(
        f"The {name} callback is async but the tool was invoked synchronously inside a running event loop; "
        "use ainvoke() or give a sync callback.",
        code="async_callback_in_sync_call",
    )


__all__ = [
    "Ran",
    "Refused",
    "ToolError",
    "governed_run",
    "run_async",
    "run_sync",
]
