"""After an allowed call ran: its execution report to AEGIS (`SUCCESS`, or `FAILED` with the error's type
and message), queued on the client's background reporter (`decisions.report_execution_later`), and the
governance record attached to its tool message."""

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


def report_execution(call: GovernedCall, decision: Decision, error: BaseException | None, ms: float) -> Flow[None]:
    """Queue the execution report of an allowed call: the client's reporter sends it in the background
    (batched, retried, flushed when the client closes), so it costs the caller no round trip. Its answer comes
    later, in the reporter: an `already_reported` one (another run acted under this decision) is logged at
    ERROR by `aegis_sdk` with the decision id. Only a full queue sends it here, on the call's path; its errors
    are logged, never raised."""
    if not call.settings.report_execution or decision.degraded:
        return None
    try:
        yield ClientCall("decisions.report_execution_later", (decision.decision_id,), _report_fields(error, ms))
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


def allowed_artifact(call: GovernedCall, decision: Decision, error: BaseException | None) -> GovernanceArtifact:
    """The governance record of a call that ran: the ALLOW decision and the execution status reported (in the
    background: `execution_audit_ref` stays None, the report's audit record does not exist yet)."""
    artifact = governance_artifact(call.capability, decision)
    if call.settings.report_execution:
        artifact["execution"] = "SUCCESS" if error is None else "FAILED"
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
