"""Execution reports: after a governed request ran, tell the platform how it went (SUCCESS, or FAILED with
the exception type or the answer's status). They go through the client's background reporter
(`decisions.report_execution_later`): queued on the request's path, sent batched off it, retried, flushed by
`drain()` and at the lifespan's shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from fastapi import HTTPException

from aegis_sdk import AegisError, AsyncAegisClient, Decision

logger = logging.getLogger("aegis_fastapi")


class ExecutionReports:
    """Execution reports as a part of `Aegis`: queued on the client's reporter, flushed by `drain()`."""

    def __init__(self) -> None:
        super().__init__()
        # The clients reports were queued on: the app's, or one a test put in `dependency_overrides`.
        self._reporting_clients: weakref.WeakSet[AsyncAegisClient] = weakref.WeakSet()

    async def schedule_report(
        self,
        client: AsyncAegisClient,
        decision: Decision,
        started: float,
        error: BaseException | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        """Queue how the governed request went as the decision's execution result: SUCCESS, or FAILED with the
        exception's type (`error`) or the answer's status (`status_code`). Nothing is awaited (the client's
        reporter sends it in the background) unless its queue is full, when it is sent now. Errors are logged,
        never raised. Degraded decisions are not reported (the platform never saw them)."""
        if decision.degraded:
            logger.info(
                "no execution report for degraded decision %s (the platform never saw it)", decision.decision_id
            )
            return
        duration_ms = max(0.0, (time.perf_counter() - started) * 1000.0)
        failure: dict[str, str] | None = None
        if error is not None:
            http_status = error.status_code if isinstance(error, HTTPException) else None
            failure = {"code": type(error).__qualname__[:200], "message": f"HTTP {http_status}" if http_status else ""}
        elif status_code is not None:
            failure = {"code": f"http_{status_code}", "message": f"HTTP {status_code}"}
        self._reporting_clients.add(client)
        try:
            if failure is None:
                await client.decisions.report_execution_later(
                    decision.decision_id, status="SUCCESS", duration_ms=duration_ms
                )
            else:
                await client.decisions.report_execution_later(
                    decision.decision_id, status="FAILED", error=failure, duration_ms=duration_ms
                )
        except AegisError as exc:  # only when the queue was full and the report was sent on the request's path
            logger.warning(
                "could not report the execution of decision %s: %s (code=%s)",
                decision.decision_id,
                type(exc).__name__,
                exc.code,
            )

    async def drain(self, timeout: float | None = 10.0) -> bool:
        """Send the queued execution reports and wait (up to `timeout` seconds) until the platform answered
        them all; True when none is left. The lifespan calls it at shutdown; an app whose lifespan does not run
        (`httpx.ASGITransport`, a `TestClient` not used as a context manager) awaits it before its event loop
        ends, and tests before reading the audit trail."""
        clients = list(self._reporting_clients)
        if not clients:
            return True
        flushed = await asyncio.gather(*(client.flush_reports(timeout) for client in clients))
        return all(flushed)


__all__ = ["ExecutionReports"]
