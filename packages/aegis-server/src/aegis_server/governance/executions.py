"""Execution reports: how an allowed action ran, recorded once, by the key that proposed it."""

from __future__ import annotations

from typing import Any

from aegis_sdk.models import ExecutionRecord, ExecutionReport
from aegis_server.governance.errors import Conflict, Forbidden, NotFound
from aegis_server.governance.runtime import GovernanceRuntime
from aegis_server.store import errors as store_errors

__all__ = ["Executions"]


class Executions:
    """`POST /decisions/{id}/execution`."""

    def __init__(self, runtime: GovernanceRuntime) -> None:
        self.rt = runtime

    async def report_execution(
        self, decision_id: str, report: ExecutionReport, *, api_key_id: str | None = None
    ) -> ExecutionRecord:
        """Record the execution report of an ALLOW decision. `api_key_id`: the reporting key, which must be
        the one that proposed the decision (403 not_proposer, audited as "execution_rejected"); None skips
        that check (trusted in-process callers)."""
        rt = self.rt
        try:
            return await rt.store.record_execution(decision_id, report, rt.clock(), api_key_id=api_key_id)
        except store_errors.NotFound:
            raise NotFound("decision", decision_id) from None
        except store_errors.NotProposer:
            await rt.audit_refusal(
                "execution_rejected",
                "not_proposer",
                decision_id=decision_id,
                payload={"api_key_id": api_key_id, "status": report.status},
            )
            raise Forbidden(
                f"Decision {decision_id} was proposed with another API key; only the key that proposed an action "
                "may report how it ran. Report with the proposing key.",
                {"decision_id": decision_id},
                code="not_proposer",
            ) from None
        except store_errors.NotAllowed as exc:
            raise Conflict(
                f"Decision {decision_id} has outcome {exc.outcome}; nothing may have run. Report executions only "
                "for ALLOW decisions.",
                {"decision_id": decision_id, "outcome": exc.outcome},
                code="not_allowed",
            ) from None
        except store_errors.AlreadyReported:
            stored = await rt.store.get_execution(decision_id)
            reported: dict[str, Any] = {"decision_id": decision_id}
            if stored is not None:  # what was recorded, so a retry whose first answer was lost can tell
                reported["execution"] = {
                    "decision_id": decision_id,
                    "status": stored["status"],
                    "recorded_at": stored["recorded_at"],
                    "audit_ref": stored["audit_ref"],
                }
            raise Conflict(
                f"The execution of decision {decision_id} was already reported; it can be reported once.",
                reported,
                code="already_reported",
            ) from None
