"""`POST /api/v1/governance/executions/batch`: up to 100 execution reports in one request, each answered on
its own (recorded, duplicate, or the error the single endpoint would have answered).

The SDK's background reporter sends them, so a governed call's execution report leaves its caller's path.
Each report meets the single endpoint's checks (an ALLOW decision, proposed by the reporting key, reported
once); the batch is written in one transaction with one append to the audit chain, a record per report, and a
report refused because another key proposed the decision is audited as `execution_rejected`, as it is there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter

from aegis_sdk.models import ExecutionBatch, ExecutionBatchAnswer, ExecutionBatchResult, ExecutionRecord
from aegis_server.api.common import BODY_ERRORS, Proposer, ServiceDep, errors
from aegis_server.store.execution_batches import BatchOutcome, record_execution_batch

router = APIRouter(prefix="/api/v1/governance", tags=["governance"])

BATCH_PATH = "/api/v1/governance/executions/batch"


@router.post(
    "/executions/batch",
    response_model=ExecutionBatchAnswer,
    status_code=200,
    summary="Report how up to 100 allowed actions ran, each answered on its own",
    description=(
        "Each report is checked as `POST /decisions/{decision_id}/execution` checks one (only an ALLOW decision, "
        "only once, only with the key that proposed it) and answered in `results`, in the batch's order: "
        "`recorded`, `duplicate` (the same status was already recorded; `execution` is the stored record) or "
        "`error` (the single endpoint's error: `not_found`, `not_proposer`, `not_allowed`, `already_reported`, "
        "`invalid_result`). The recorded reports are written in one transaction, each audited as `execution`."
    ),
    responses=errors(*BODY_ERRORS),
)
async def report_executions(batch: ExecutionBatch, service: ServiceDep, principal: Proposer) -> ExecutionBatchAnswer:
    outcomes = await record_execution_batch(
        service.store.database, batch.reports, service.clock(), api_key_id=principal.key_id
    )
    refused = {
        outcome.decision_id: item.status
        for item, outcome in zip(batch.reports, outcomes, strict=True)
        if outcome.reason == "not_proposer"
    }
    await _audit_not_proposer(service, refused, principal.key_id)
    return ExecutionBatchAnswer(
        results=[_result(outcome, item.status) for item, outcome in zip(batch.reports, outcomes, strict=True)]
    )


async def _audit_not_proposer(service: ServiceDep, refused: Mapping[str, str], key_id: str | None) -> None:
    """The `execution_rejected` records the single endpoint writes for another key's reports: one per decision
    (a batch naming one 100 times is one refusal), in one transaction. A refusal that cannot be audited is not
    answered."""
    if not refused:
        return
    entries = [
        {
            "event_type": "execution_rejected",
            "payload": {"code": "not_proposer", "api_key_id": key_id, "status": status},
            "decision_id": decision_id,
        }
        for decision_id, status in refused.items()
    ]
    try:
        await service.store.append_audits(entries)
    except Exception:
        service.metrics.audit_failures.inc()
        raise
    service.metrics.rejected.labels(code="not_proposer").inc(len(entries))


def _result(outcome: BatchOutcome, status: str) -> ExecutionBatchResult:
    decision_id = outcome.decision_id
    if outcome.recorded:
        return ExecutionBatchResult(
            decision_id=decision_id, status="recorded", execution=ExecutionRecord.model_validate(outcome.record)
        )
    stored = outcome.stored
    if outcome.reason == "already_reported" and stored is not None and stored.get("status") == status:
        return ExecutionBatchResult(
            decision_id=decision_id, status="duplicate", execution=ExecutionRecord.model_validate(stored)
        )
    return ExecutionBatchResult.model_validate(
        {"decision_id": decision_id, "status": "error", "error": _error(outcome)}
    )


def _error(outcome: BatchOutcome) -> dict[str, Any]:
    """The error body the single endpoint answers for this refusal (same type, code, message and details)."""
    decision_id = outcome.decision_id
    details: dict[str, Any] = {"decision_id": decision_id}
    if outcome.reason == "not_found":
        return {
            "type": "not_found",
            "code": "not_found",
            "message": f"No decision {decision_id!r} exists. Check the decision name or id (list them with GET on "
            "the collection).",
            "details": {"resource": "decision", "id": decision_id},
        }
    if outcome.reason == "not_proposer":
        message = (
            f"Decision {decision_id} was proposed with another API key; only the key that proposed an action may "
            "report how it ran. Report with the proposing key."
        )
        return {"type": "governance_error", "code": "not_proposer", "message": message, "details": details}
    if outcome.reason == "not_allowed":
        message = (
            f"Decision {decision_id} has outcome {outcome.outcome}; nothing may have run. Report executions only "
            "for ALLOW decisions."
        )
        details["outcome"] = outcome.outcome
        return {"type": "governance_error", "code": "not_allowed", "message": message, "details": details}
    if outcome.reason == "already_reported":
        if outcome.stored is not None:
            details["execution"] = outcome.stored
        message = f"The execution of decision {decision_id} was already reported; it can be reported once."
        return {"type": "governance_error", "code": "already_reported", "message": message, "details": details}
    message = "The report's result is not JSON data (NaN, Infinity or a value JSON cannot carry)."
    return {"type": "validation_error", "code": "invalid_result", "message": message, "details": details}


__all__ = ["BATCH_PATH", "router"]
