"""The governance of one tool call, written once: propose, confirm, wait for or pause on a review, run the
tool under the ALLOW decision and report how it went. The flow is a generator that yields the I/O it
needs (a client call, a user callback, the tool's run) and is driven by `run_sync` with an `AegisClient`
or by `run_async` with an `AsyncAegisClient` (never a thread hop around a sync call): sync and async
differ only in those two small loops."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aegis_langchain._artifact import GovernanceArtifact, governance_artifact
from aegis_langchain._call import GovernedCall, current_decision_var
from aegis_langchain._errors import GovernanceRefusal
from aegis_langchain._refusals import declined, denied, invalid, still_pending, unavailable
from aegis_sdk import (
    AegisClient,
    AegisError,
    AsyncAegisClient,
    ConfigurationError,
    Decision,
    ParameterValidationError,
    ReviewTimeoutError,
)

logger = logging.getLogger("aegis_langchain")

INTERRUPT_TYPE = "aegis_escalation"
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
    """Run the governed tool (or the agent's tool handler) and send back its output."""


Step = ClientCall | UserCallback | RunTool
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
    unless they are LangGraph control flow)."""
    try:
        decision = yield from _govern(call)
    except GovernanceRefusal as refusal:
        return Refused(refusal)
    started = time.perf_counter()
    token = current_decision_var.set(decision)
    try:
        output = yield RunTool()
    except Exception as exc:
        if not is_graph_bubble_up(exc):
            yield from _report(call, decision, exc, _ms(started))
        raise
    finally:
        current_decision_var.reset(token)
    failed = failure_of(output)
    ref = yield from _report(call, decision, failed, _ms(started))
    return Ran(output, allowed_artifact(call, decision, failed, ref))


def _govern(call: GovernedCall) -> Flow[Decision]:
    """The ALLOW decision the tool may run under, or raise a GovernanceRefusal."""
    interrupting = call.settings.on_escalate == "interrupt" and call.resume_key is not None
    decision = yield from _propose(call, idempotency_key=call.resume_key if interrupting else None)
    if decision.outcome == "ALLOW":
        return decision
    if decision.outcome == "REQUIRE_CONFIRMATION":
        if call.settings.confirm is None:
            raise denied(call, decision)
        if not (yield UserCallback("confirm", call.settings.confirm, decision)):
            raise declined(call, decision)
        return (yield from _allowed(call, token=decision.confirmation_token))
    if decision.outcome == "ESCALATE":
        return (yield from _escalated(call, decision, interrupting))
    raise denied(call, decision)


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


def _escalated(call: GovernedCall, decision: Decision, interrupting: bool) -> Flow[Decision]:
    mode = call.settings.on_escalate
    if call.settings.on_escalation is not None and not interrupting and _review_status(decision) in (None, "pending"):
        # Not in interrupt mode: there the graph's `__interrupt__` is the notification, and a resumed run
        # sees the same decision again.
        yield UserCallback("on_escalation", call.settings.on_escalation, decision)
    if mode == "raise":
        raise denied(call, decision)
    if mode == "interrupt":
        if not interrupting:
            raise still_pending(call, decision, timed_out=False)
        payload = _interrupt_payload(call, decision)
        while True:
            _interrupt(payload)
            try:
                current: Decision = yield ClientCall("decisions.get", (decision.decision_id,))
            except AegisError as exc:
                raise unavailable(call, exc) from exc
            status = _review_status(current)
            if status == "approved" and current.confirmation_token:
                assert call.resume_key is not None
                approved_key = call.resume_key + "-approved"
                return (yield from _allowed(call, token=current.confirmation_token, idempotency_key=approved_key))
            if status not in (None, "pending"):
                raise denied(call, current)
            # resumed while the review is still pending: pause again on the same decision
    try:
        final: Decision = yield ClientCall("wait_for_review", (decision,), {"timeout": call.settings.review_timeout})
    except ReviewTimeoutError as exc:
        raise still_pending(call, exc.decision, timed_out=True) from None
    except AegisError as exc:
        raise unavailable(call, exc) from exc
    _log_decision(call, final)
    if final.outcome == "ALLOW":
        return final
    raise denied(call, final)


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


def _interrupt_payload(call: GovernedCall, decision: Decision) -> dict[str, Any]:
    """What the graph's `__interrupt__` carries (a plain dict; no token)."""
    return {
        "type": INTERRUPT_TYPE,
        "decision_id": decision.decision_id,
        "audit_ref": decision.audit_ref,
        "capability": call.capability,
        "tool": call.tool_name,
        "tool_call_id": call.tool_call_id,
        "actor_id": call.actor.id,
        "session_id": call.session_id,
        "parameters": call.parameters,
        "reason": decision.reason,
        "risk_score": decision.risk_score,
        "policy_ids": list(decision.policy_ids),
        "expires_at": decision.expires_at,
    }


def _interrupt(value: dict[str, Any]) -> Any:
    try:
        from langgraph.types import interrupt
    except ImportError:  # pragma: no cover - the extra is part of the workspace
        raise ConfigurationError(
            "on_escalate='interrupt' needs LangGraph: pip install 'aegis-langchain[langgraph]'.",
            code="langgraph_missing",
        ) from None
    return interrupt(value)


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


def run_sync(flow: Flow[_T], client: AegisClient, run: Callable[[], Any] | None = None) -> _T:
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
            else:
                assert run is not None
                result = run()
        except BaseException as exc:
            error = exc


async def run_async(flow: Flow[_T], client: AsyncAegisClient, run: Callable[[], Awaitable[Any]] | None = None) -> _T:
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
            else:
                assert run is not None
                result = await run()
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
    "INTERRUPT_TYPE",
    "Ran",
    "Refused",
    "ToolError",
    "governed_run",
    "run_async",
    "run_sync",
]
