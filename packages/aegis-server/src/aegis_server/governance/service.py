"""`GovernanceService`: the one object the routers, the CLI and the in-process server call. A thin façade:
each method hands over to its use case (`proposals`, `reviews`, `executions`, `queries`, `audit_reads`)
and the policy set is `policies` (`aegis_server.policies.manager.PolicyManager`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aegis_sdk.models import (
    AuditPage,
    AuditTrail,
    AuditVerification,
    Decision,
    DecisionPage,
    ExecutionRecord,
    ExecutionReport,
    Proposal,
    ReviewRequest,
)
from aegis_server.audit.anchor import AuditAnchor
from aegis_server.governance import queries
from aegis_server.governance.audit_reads import AuditReads
from aegis_server.governance.executions import Executions
from aegis_server.governance.proposals import Proposals
from aegis_server.governance.reviews import Reviews
from aegis_server.governance.runtime import Clock, GovernanceRuntime, ReviewNotifier, utcnow
from aegis_server.metrics import Metrics
from aegis_server.policies.manager import PolicyManager
from aegis_server.security import Principal
from aegis_server.settings import Settings
from aegis_server.store import AuditFilters, DecisionFilters, Store
from aegis_server.store.probe import StorageHealth

__all__ = ["GovernanceService"]


class GovernanceService:
    """Everything the routers do, with the store, the engine, the token signer and the metrics."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = StorageHealth(store, monotonic=monotonic)  # readiness: can the store write?
        self.metrics = metrics
        self.clock = clock
        self.audit_anchor: AuditAnchor | None = None  # the lifespan's checkpoints (None: nothing anchored)
        self.policies = PolicyManager(
            store,
            settings.resolved_policy_paths(),
            metrics,
            refresh_interval=settings.policy_refresh_interval_seconds,
            monotonic=monotonic,
        )
        self._runtime = GovernanceRuntime(
            settings=settings,
            store=store,
            metrics=metrics,
            clock=clock,
            policies=self.policies,
            engine_config=settings.engine_config(),
        )
        self._proposals = Proposals(self._runtime)
        self._reviews = Reviews(self._runtime)
        self._executions = Executions(self._runtime)
        self._audit = AuditReads(store)

    @property
    def notifier(self) -> ReviewNotifier:
        return self._runtime.notifier

    async def start(self) -> None:
        """Prepare the token signer and load the policy set (raises PolicySetError if it does not compile)."""
        await self.init_tokens()
        await self.policies.load()

    async def init_tokens(self) -> None:
        """The token secret: `settings.secret`, else the one kept in the store (made on first start)."""
        await self._runtime.init_tokens()

    # -- decisions --------------------------------------------------------------------------------

    async def propose(
        self, proposal: Proposal, *, principal: Principal, idempotency_key: str | None
    ) -> tuple[Decision, bool]:
        """Decide one proposal: (decision, replayed). See `Proposals.propose`."""
        return await self._proposals.propose(proposal, principal=principal, idempotency_key=idempotency_key)

    async def get_decision(self, decision_id: str, *, wait: float | None = None) -> Decision:
        return await self._reviews.get_decision(decision_id, wait=wait)

    async def list_decisions(self, filters: DecisionFilters, *, limit: int, cursor: str | None) -> DecisionPage:
        return await queries.list_decisions(self.store, filters, limit=limit, cursor=cursor)

    async def review(
        self, decision_id: str, request: ReviewRequest, *, reviewer: str, reviewer_key_id: str | None = None
    ) -> Decision:
        """Approve or deny a pending ESCALATE. See `Reviews.review`."""
        return await self._reviews.review(decision_id, request, reviewer=reviewer, reviewer_key_id=reviewer_key_id)

    async def expire_due(self, now: datetime | None = None) -> list[str]:
        """Expire pending reviews past their deadline (final DENY) and wake their waiters."""
        return await self._reviews.expire_due(now)

    async def report_execution(
        self, decision_id: str, report: ExecutionReport, *, api_key_id: str | None = None
    ) -> ExecutionRecord:
        """Record the execution report of an ALLOW decision. See `Executions.report_execution`."""
        return await self._executions.report_execution(decision_id, report, api_key_id=api_key_id)

    # -- audit ------------------------------------------------------------------------------------

    async def audit_log(self, filters: AuditFilters, *, limit: int, cursor: str | None) -> AuditPage:
        return await self._audit.audit_log(filters, limit=limit, cursor=cursor)

    async def audit_trail(self, decision_id: str) -> AuditTrail:
        return await self._audit.audit_trail(decision_id)

    async def verify_audit(self) -> AuditVerification:
        """The chain, the latest signed checkpoint and the decisions table (`audit.verification.verify_audit`)."""
        return await self._audit.verify_audit(self.audit_anchor)

    # -- health -----------------------------------------------------------------------------------

    async def readiness(self) -> dict[str, dict[str, Any]]:
        # The store is ready when it can write (a rolled-back write probe, cached 1 s) and no request met
        # a read-only database or a full disk in the last seconds (see store/probe.py).
        problem = await self.storage.check()
        store_check: dict[str, Any] = {"ok": problem is None}
        if problem is not None:
            store_check.update(cause=problem.cause, message=problem.message)
        checks: dict[str, dict[str, Any]] = {"store": store_check}
        if self.policies.loaded and problem is None:
            # An idle replica learns of other replicas' changes here too (load balancers poll this), so the
            # version it reports, and its aegis_policy_version metric, are the ones it decides with.
            await self.policies.maybe_refresh()
        if self.policies.loaded:
            active = self.policies.active
            checks["policies"] = {
                "ok": True,
                "policies": len(active.policies),
                "capabilities": len(active.capabilities),
                "rules": active.rule_count,
                "digest": active.digest,
                "version": active.version,
            }
        else:
            checks["policies"] = {"ok": False}
        return checks
