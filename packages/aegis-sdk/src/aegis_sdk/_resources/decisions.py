"""`client.decisions`: read, list, review and report on decisions.

The call builders (no I/O) and the two namespaces that send what they build: `Decisions` for `AegisClient`,
`AsyncDecisions` for `AsyncAegisClient`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic

from aegis_sdk._constants import MAX_WAIT_SECONDS
from aegis_sdk._paging import AsyncPageIterator, Pager, SyncPageIterator, listing_pager
from aegis_sdk._parsing import DECISION_ADAPTER, decision_from, model_parser, parse_decision
from aegis_sdk._reporter import AsyncReporter, SyncReporter, pending_report
from aegis_sdk._request import AsyncSender, Call, Resource, SyncSender
from aegis_sdk._validation import dump_model, path_segment, validate_model
from aegis_sdk.errors import AegisError, InvalidRequestError
from aegis_sdk.models import (
    ACTOR_TYPES,
    OUTCOMES,
    ActorType,
    Decision,
    ExecutionError,
    ExecutionRecord,
    ExecutionReport,
    ExecutionStatus,
    Outcome,
    ReviewRequest,
    ReviewStatus,
)

REVIEW_STATUSES = ("pending", "approved", "denied", "expired")


def get_decision_call(decision_id: str, wait: int | None, timeout: float) -> Call[Decision]:
    """GET one decision; with `wait`, a long-poll that may take `wait` seconds on top of `timeout`."""
    path = f"/governance/decisions/{path_segment(decision_id, 'decision_id')}"
    if wait is None:
        return Call("GET", path, parse_decision, operation="get_decision")
    if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidRequestError(
            f"wait must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}, got {wait!r}.",
            code="invalid_request",
        )
    # The long-poll holds the request open for up to `wait` seconds: allow that on top of the timeout.
    return Call(
        "GET", path, parse_decision, params={"wait": str(wait)}, timeout=timeout + wait, operation="get_decision"
    )


def decisions_pager(
    actor_id: str | None,
    actor_type: ActorType | None,
    decision_id: str | None,
    capability: str | None,
    outcome: Outcome | None,
    session_id: str | None,
    review_status: ReviewStatus | None,
    since: str | datetime | None,
    until: str | datetime | None,
    limit: int | None,
) -> Pager[Decision]:
    """The listing behind `decisions.list()` (its arguments in its order); bad filters raise now."""
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidRequestError(f"outcome must be one of {', '.join(OUTCOMES)}.", code="invalid_request")
    if review_status is not None and review_status not in REVIEW_STATUSES:
        raise InvalidRequestError(f"review_status must be one of {', '.join(REVIEW_STATUSES)}.", code="invalid_request")
    if actor_type is not None and actor_type not in ACTOR_TYPES:
        raise InvalidRequestError(f"actor_type must be one of {', '.join(ACTOR_TYPES)}.", code="invalid_request")
    filters = {
        "actor_id": actor_id,
        "actor_type": actor_type,
        "decision_id": decision_id,
        "capability": capability,
        "outcome": outcome,
        "session_id": session_id,
        "review_status": review_status,
    }
    return listing_pager(
        "list_decisions", "/governance/decisions", decision_from, filters, since=since, until=until, limit=limit
    )


def review_call(decision_id: str, approve: bool, note: str | None) -> Call[Decision]:
    if not isinstance(approve, bool):
        raise InvalidRequestError("approve must be True or False.", code="invalid_request")
    body = dump_model(validate_model(ReviewRequest, {"approve": approve, "note": note}, "review"), "review")
    path = f"/governance/decisions/{path_segment(decision_id, 'decision_id')}/review"
    wanted = "approved" if approve else "denied"

    def reconcile(error: AegisError) -> Decision | None:
        # The platform hands back the decision when this same reviewer already resolved it.
        stored = error.details.get("decision")
        if error.code != "not_pending" or error.details.get("status") != wanted or not isinstance(stored, dict):
            return None
        try:
            return DECISION_ADAPTER.validate_python(stored)
        except pydantic.ValidationError:
            return None

    return Call("POST", path, parse_decision, body=body, reconcile=reconcile, operation="review")


def execution_call(
    decision_id: str,
    status: ExecutionStatus,
    result: Any,
    error: ExecutionError | Mapping[str, Any] | None,
    duration_ms: float | None,
) -> Call[ExecutionRecord]:
    report = validate_model(
        ExecutionReport,
        {"status": status, "result": result, "error": error, "duration_ms": duration_ms},
        "execution report",
    )
    path = f"/governance/decisions/{path_segment(decision_id, 'decision_id')}/execution"

    def reconcile(error: AegisError) -> ExecutionRecord | None:
        stored = error.details.get("execution")
        if error.code != "already_reported" or not isinstance(stored, dict) or stored.get("status") != status:
            return None
        try:
            return ExecutionRecord.model_validate(stored)
        except pydantic.ValidationError:
            return None

    return Call(
        "POST",
        path,
        model_parser(ExecutionRecord),
        body=dump_model(report, "execution report"),
        reconcile=reconcile,
        operation="report_execution",
    )


class Decisions(Resource[SyncSender]):
    """`client.decisions`: read, list, review and report on decisions."""

    def get(self, decision_id: str, *, wait: int | None = None) -> Decision:
        """One decision. With `wait` (0..60 s) the platform holds the request until a pending review resolves."""
        return self._client._request(get_decision_call(decision_id, wait, self._client.timeout))

    def list(
        self,
        *,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: Outcome | None = None,
        session_id: str | None = None,
        review_status: ReviewStatus | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = None,
        actor_type: ActorType | None = None,
        decision_id: str | None = None,
    ) -> SyncPageIterator[Decision]:
        """Every matching decision, newest first, fetched `limit` (page size, 1..200) at a time as you iterate.
        `decision_id` keeps that one decision (so, with `actor_id` and `actor_type`: whether it is theirs)."""
        pager = decisions_pager(
            actor_id, actor_type, decision_id, capability, outcome, session_id, review_status, since, until, limit
        )
        return SyncPageIterator(self._client, pager)

    def review(self, decision_id: str, *, approve: bool, note: str | None = None) -> Decision:
        """Approve or deny a pending ESCALATE decision (needs the `governance:review` scope)."""
        return self._client._request(review_call(decision_id, approve, note))

    def report_execution(
        self,
        decision_id: str,
        *,
        status: ExecutionStatus,
        result: Any = None,
        error: ExecutionError | Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
    ) -> ExecutionRecord:
        """Record how an allowed action went (SUCCESS, FAILED or PARTIAL); once per ALLOW decision."""
        return self._client._request(execution_call(decision_id, status, result, error, duration_ms))

    def report_execution_later(
        self,
        decision_id: str,
        *,
        status: ExecutionStatus,
        result: Any = None,
        error: ExecutionError | Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Queue the execution report and return at once: a background thread sends it, batched with others,
        retried on transport errors, 429 and 5xx, flushed by `close()` and at interpreter exit; see
        `client.report_stats`. Bad input raises now. When the queue is full (10,000 reports), the report is
        sent now, as `report_execution()` sends it (and raises as it does)."""
        report = pending_report(decision_id, status, result, error, duration_ms)
        reporter: SyncReporter = getattr(self._client, "_reporter")  # noqa: B009 (the Protocol does not name it)
        if reporter.submit(report):
            return
        with reporter.queue.lock:
            reporter.queue.synchronous += 1
        self.report_execution(decision_id, status=status, result=result, error=error, duration_ms=duration_ms)


class AsyncDecisions(Resource[AsyncSender]):
    """`client.decisions`: read, list, review and report on decisions."""

    async def get(self, decision_id: str, *, wait: int | None = None) -> Decision:
        """One decision. With `wait` (0..60 s) the platform holds the request until a pending review resolves."""
        return await self._client._request(get_decision_call(decision_id, wait, self._client.timeout))

    def list(
        self,
        *,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: Outcome | None = None,
        session_id: str | None = None,
        review_status: ReviewStatus | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = None,
        actor_type: ActorType | None = None,
        decision_id: str | None = None,
    ) -> AsyncPageIterator[Decision]:
        """Every matching decision, newest first, fetched `limit` (page size, 1..200) at a time as you iterate.
        `decision_id` keeps that one decision (so, with `actor_id` and `actor_type`: whether it is theirs)."""
        pager = decisions_pager(
            actor_id, actor_type, decision_id, capability, outcome, session_id, review_status, since, until, limit
        )
        return AsyncPageIterator(self._client, pager)

    async def review(self, decision_id: str, *, approve: bool, note: str | None = None) -> Decision:
        """Approve or deny a pending ESCALATE decision (needs the `governance:review` scope)."""
        return await self._client._request(review_call(decision_id, approve, note))

    async def report_execution(
        self,
        decision_id: str,
        *,
        status: ExecutionStatus,
        result: Any = None,
        error: ExecutionError | Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
    ) -> ExecutionRecord:
        """Record how an allowed action went (SUCCESS, FAILED or PARTIAL); once per ALLOW decision."""
        return await self._client._request(execution_call(decision_id, status, result, error, duration_ms))

    async def report_execution_later(
        self,
        decision_id: str,
        *,
        status: ExecutionStatus,
        result: Any = None,
        error: ExecutionError | Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Queue the execution report and return at once (nothing is awaited): a task on this event loop sends
        it, batched with others, retried on transport errors, 429 and 5xx, flushed by `aclose()`; see
        `client.report_stats`. Bad input raises now. When the queue is full (10,000 reports), the report is
        sent now, as `report_execution()` sends it (and raises as it does)."""
        report = pending_report(decision_id, status, result, error, duration_ms)
        reporter: AsyncReporter = getattr(self._client, "_reporter")  # noqa: B009 (the Protocol does not name it)
        if reporter.submit(report):
            return
        with reporter.queue.lock:
            reporter.queue.synchronous += 1
        await self.report_execution(decision_id, status=status, result=result, error=error, duration_ms=duration_ms)


__all__ = [
    "AsyncDecisions",
    "Decisions",
    "decisions_pager",
    "execution_call",
    "get_decision_call",
    "review_call",
]
