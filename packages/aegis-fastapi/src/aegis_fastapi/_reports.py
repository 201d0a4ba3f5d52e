"""Execution reports: after a governed request ran, tell the platform how it went (SUCCESS, or FAILED with
the exception type or the answer's status), in background tasks that shutdown drains."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import HTTPException

from aegis_sdk import AsyncAegisClient, Decision

logger = logging.getLogger("aegis_fastapi")


class ExecutionReports:
    """Execution reports as a part of `Aegis`: the background tasks sending them."""

    def __init__(self) -> None:
        super().__init__()
        self._report_tasks: set[asyncio.Task[None]] = set()

    def schedule_report(
        self,
        client: AsyncAegisClient,
        decision: Decision,
        started: float,
        error: BaseException | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        """Report how the governed request went as the decision's execution result, in a background task:
        SUCCESS, or FAILED with the exception's type (`error`) or the answer's status (`status_code`).
        Errors while reporting are logged, never raised. Degraded decisions are not reported."""
        if decision.degraded:
            logger.info(
                "no execution report for degraded decision %s (the platform never saw it)", decision.decision_id
            )
            return
        failure: dict[str, str] | None = None
        if error is not None:
            http_status = error.status_code if isinstance(error, HTTPException) else None
            failure = {"code": type(error).__qualname__[:200], "message": f"HTTP {http_status}" if http_status else ""}
        elif status_code is not None:
            failure = {"code": f"http_{status_code}", "message": f"HTTP {status_code}"}
        duration_ms = max(0.0, (time.perf_counter() - started) * 1000.0)
        task = asyncio.get_running_loop().create_task(_report(client, decision.decision_id, duration_ms, failure))
        self._report_tasks.add(task)
        task.add_done_callback(self._report_tasks.discard)

    async def drain(self, timeout: float | None = 10.0) -> None:
        """Wait (up to `timeout` seconds) for execution reports still being sent. The lifespan calls it at
        shutdown; tests call it before reading the audit trail."""
        pending = [task for task in self._report_tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


async def _report(
    client: AsyncAegisClient, decision_id: str, duration_ms: float, failure: dict[str, str] | None
) -> None:
    """Send one report; errors are logged, never raised."""
    try:
        if failure is None:
            await client.decisions.report_execution(decision_id, status="SUCCESS", duration_ms=duration_ms)
        else:
            await client.decisions.report_execution(
                decision_id, status="FAILED", error=failure, duration_ms=duration_ms
            )
    except Exception as exc:
        logger.warning(
            "could not report the execution of decision %s: %s (code=%s)",
            decision_id,
            type(exc).__name__,
            getattr(exc, "code", None),
        )
    except asyncio.CancelledError:
        # The loop is shutting down before the report was sent: no lifespan drained it (a TestClient not used
        # as a context manager, httpx.ASGITransport). Say so: a lost report is a gap in the audit trail.
        logger.warning(
            "the execution report of decision %s was cancelled before it was sent (the event loop ended without "
            "the app's lifespan draining it: run the lifespan, or await aegis.drain())",
            decision_id,
        )
        raise


__all__ = ["ExecutionReports"]
