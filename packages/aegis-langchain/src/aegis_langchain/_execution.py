"""After an allowed call ran: its execution report to AEGIS (`SUCCESS`, or `FAILED` with the error's type
and message) and the governance record attached to its tool message."""

from __future__ import annotations

import logging
import time
from typing import Any

from aegis_langchain._artifact import GovernanceArtifact, governance_artifact
from aegis_langchain._call import GovernedCall
from aegis_langchain._drivers import ClientCall, Flow
from aegis_sdk import AegisError, Decision

logger = logging.getLogger("aegis_langchain")

_ERROR_MESSAGE_LIMIT = 1000


def report_execution(
    call: GovernedCall, decision: Decision, error: BaseException | None, ms: float
) -> Flow[str | None]:
    """Report the execution of an allowed call; returns the audit ref, or None (errors are logged)."""
    if not call.settings.report_execution or decision.degraded:
        return None
    try:
        record = yield ClientCall("decisions.report_execution", (decision.decision_id,), _report_fields(error, ms))
    except AegisError as exc:
        if exc.code == "already_reported":
            # Another process ran a tool under this decision and reported it: the action may have run twice.
            logger.error(
                "tool %s ran under decision %s, whose execution was already reported: the action may have been "
                "performed twice (a re-run of the same LangGraph step in another process)",
                call.tool_name,
                decision.decision_id,
            )
            return None
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


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


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


__all__ = ["ToolError", "allowed_artifact", "elapsed_ms", "failure_of", "is_graph_bubble_up", "report_execution"]
