"""`AsyncAegisClient`: the asyncio client. All logic lives in `_base.BaseClient`; this module only sends,
sleeps and loops (the mirror of `_client.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import EllipsisType, TracebackType
from typing import Any, Generic, TypeVar

import httpx

from aegis_sdk._base import DEFAULT_REVIEW_TIMEOUT, BaseClient, _Call, _Pager, _Retry
from aegis_sdk._config import resolve_config
from aegis_sdk.errors import ConfigurationError
from aegis_sdk.models import (
    Action,
    Actor,
    AuditRecord,
    AuditTrail,
    AuditVerification,
    Capability,
    Context,
    Decision,
    ExecutionError,
    ExecutionRecord,
    ExecutionStatus,
    Health,
    Outcome,
    Policy,
    PolicyValidation,
    ReviewStatus,
)

T = TypeVar("T")


class AsyncAegisClient(BaseClient):
    """Asynchronous (asyncio) client of the AEGIS platform; the same methods as AegisClient, awaited.

    ```python
    async with AsyncAegisClient(endpoint="http://127.0.0.1:8000", api_key="aegis_sk_...") as aegis:
        decision = await aegis.propose(actor={"id": "agent-001", "type": "ai-agent"},
                                 action={"capability": "database.query", "parameters": {"query": "SELECT 1"}})
    ```

    Arguments win over the environment (`AEGIS_ENDPOINT`, `AEGIS_API_KEY`, `AEGIS_TIMEOUT`, `AEGIS_RETRIES`,
    `AEGIS_LOG_LEVEL`). `timeout` is per HTTP request; `retries` is how many times a transient failure
    (connection error, timeout, 429, 500, 502, 503, 504) is retried after the first attempt, waiting
    `retry_delay * 2**n` seconds (with jitter, or the server's Retry-After; at most 30 s). Pass
    `http_client=httpx.AsyncClient(transport=...)` to supply your own transport or pool; the client then
    leaves closing it to you.
    """

    _sleep: Callable[[float], Awaitable[None]]

    def __init__(
        self,
        endpoint: str | EllipsisType | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry_delay: float = 1.0,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError(
                f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
                + (" (use AegisClient for an httpx.Client)" if isinstance(http_client, httpx.Client) else "")
                + ".",
                code="invalid_http_client",
            )
        super().__init__(resolve_config(endpoint, api_key, timeout, retries, retry_delay))
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)
        self._sleep = asyncio.sleep
        self.decisions = AsyncDecisions(self)
        self.capabilities = AsyncCapabilities(self)
        self.policies = AsyncPolicies(self)
        self.audit = AsyncAudit(self)

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the connection pool (only if this client created it). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAegisClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the send/sleep loop ----------------------------------------------------------------------

    async def _request(self, call: _Call[T]) -> T:
        self._check_open()
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method,
                self._url(call),
                params=call.params,
                content=call.body,
                headers=self._headers(call),
                timeout=self._request_timeout(call),
            )
            self._log_attempt(call, attempt)
            try:
                response = await self._http.send(request)
            except httpx.RequestError as exc:
                retry = self._on_transport_error(call, exc, attempt)
            else:
                result = self._on_response(call, response, attempt)
                if not isinstance(result, _Retry):
                    return result
                retry = result
            await self._sleep(retry.delay)
            attempt += 1

    # -- governance -------------------------------------------------------------------------------

    async def propose(
        self,
        actor: Actor | Mapping[str, Any],
        action: Action | Mapping[str, Any],
        context: Context | Mapping[str, Any] | None = None,
        *,
        confirmation_token: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Decision:
        """Ask AEGIS whether `actor` may perform `action`; returns the Decision (every outcome is a normal
        return, never an exception). Retries reuse one Idempotency-Key, so a retried proposal is decided once."""
        call = self._propose_call(
            actor,
            action,
            context,
            confirmation_token=confirmation_token,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
        return await self._request(call)

    async def confirm(self, decision: Decision, *, timeout: float | None = None) -> Decision:
        """Resubmit the proposal behind a REQUIRE_CONFIRMATION decision with its token, after the user
        consented; returns the new decision (ALLOW, with `parent_decision_id` set)."""
        result = await self._request(self._confirm_call(decision, timeout))
        return self._confirmed(decision, result)

    async def wait_for_review(self, decision: Decision, *, timeout: float | None = DEFAULT_REVIEW_TIMEOUT) -> Decision:
        """Wait until a reviewer resolves an ESCALATE decision. Approved: returns the ALLOW decision of the
        resubmitted proposal. Denied or expired: returns the final DENY decision. Raises ReviewTimeoutError
        (with `.decision`) after `timeout` seconds (None: wait until the platform's review deadline)."""
        deadline = self._begin_review_wait(decision, timeout)
        current = decision
        while True:
            status = self._review_status(current)
            if status == "approved":
                return self._confirmed(decision, await self._request(self._approved_call(decision, current)))
            if status != "pending":
                self._proposals.forget(decision.decision_id)
                return current
            call, wait = self._next_poll(decision, current, deadline)
            started = self._clock()
            current = await self._request(call)
            if self._review_status(current) == "pending":
                pause = self._poll_pause(started, wait, deadline)
                if pause > 0:
                    await self._sleep(pause)

    async def health(self) -> Health:
        """Liveness of the platform (no authentication needed)."""
        return await self._request(self._health_call())

    async def ready(self) -> Health:
        """Readiness: store reachable and policies loaded. A not-ready platform answers with status != "ok"."""
        return await self._request(self._ready_call())


class AsyncPageIterator(Generic[T]):
    """Iterates (`async for`) every item of a listing, fetching the next page only when needed."""

    def __init__(self, client: AsyncAegisClient, pager: _Pager[T]) -> None:
        self._client = client
        self._pager = pager

    def __aiter__(self) -> AsyncPageIterator[T]:
        return self

    async def __anext__(self) -> T:
        while not self._pager.buffer:
            call = self._pager.next_call()
            if call is None:
                raise StopAsyncIteration
            self._pager.accept(await self._client._request(call))
        return self._pager.buffer.popleft()


class AsyncDecisions:
    """`client.decisions`: read, list, review and report on decisions."""

    def __init__(self, client: AsyncAegisClient) -> None:
        self._client = client

    async def get(self, decision_id: str, *, wait: int | None = None) -> Decision:
        """One decision. With `wait` (0..60 s) the platform holds the request until a pending review resolves."""
        return await self._client._request(self._client._get_decision_call(decision_id, wait))

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
    ) -> AsyncPageIterator[Decision]:
        """Every matching decision, newest first, fetched `limit` (page size, 1..200) at a time as you iterate."""
        pager = self._client._list_decisions_pager(
            actor_id=actor_id,
            capability=capability,
            outcome=outcome,
            session_id=session_id,
            review_status=review_status,
            since=since,
            until=until,
            limit=limit,
        )
        return AsyncPageIterator(self._client, pager)

    async def review(self, decision_id: str, *, approve: bool, note: str | None = None) -> Decision:
        """Approve or deny a pending ESCALATE decision (needs the `governance:review` scope)."""
        return await self._client._request(self._client._review_call(decision_id, approve, note))

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
        return await self._client._request(
            self._client._execution_call(decision_id, status, result, error, duration_ms)
        )


class AsyncCapabilities:
    """`client.capabilities`: the registry of capabilities and their parameter schemas."""

    def __init__(self, client: AsyncAegisClient) -> None:
        self._client = client

    async def list(self) -> list[Capability]:
        return await self._client._request(self._client._capabilities_list_call())

    async def get(self, name: str) -> Capability:
        return await self._client._request(self._client._capability_get_call(name))

    async def create(self, capability: Capability | Mapping[str, Any]) -> Capability:
        return await self._client._request(self._client._capability_create_call(capability))


class AsyncPolicies:
    """`client.policies`: manage the policies stored on the platform (needs `policies:manage` to change them)."""

    def __init__(self, client: AsyncAegisClient) -> None:
        self._client = client

    async def list(self) -> list[Policy]:
        return await self._client._request(self._client._policies_list_call())

    async def get(self, name: str) -> Policy:
        return await self._client._request(self._client._policy_get_call(name))

    async def create(self, policy: Policy | Mapping[str, Any]) -> Policy:
        return await self._client._request(self._client._policy_create_call(policy))

    async def update(self, name: str, policy: Policy | Mapping[str, Any]) -> Policy:
        return await self._client._request(self._client._policy_update_call(name, policy))

    async def delete(self, name: str) -> None:
        await self._client._request(self._client._policy_delete_call(name))

    async def validate(self, policy: Policy | Mapping[str, Any]) -> PolicyValidation:
        """Dry run: would the active set still compile with this policy added or replaced?"""
        return await self._client._request(self._client._policy_validate_call(policy))


class AsyncAudit:
    """`client.audit`: the hash-chained audit log."""

    def __init__(self, client: AsyncAegisClient) -> None:
        self._client = client

    def log(
        self,
        *,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        decision_id: str | None = None,
        event_type: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = None,
    ) -> AsyncPageIterator[AuditRecord]:
        """Every matching audit record, fetched page by page as you iterate."""
        pager = self._client._audit_log_pager(
            actor_id=actor_id,
            capability=capability,
            outcome=outcome,
            session_id=session_id,
            decision_id=decision_id,
            event_type=event_type,
            since=since,
            until=until,
            limit=limit,
        )
        return AsyncPageIterator(self._client, pager)

    async def trail(self, decision_id: str) -> AuditTrail:
        """Every record of one decision: proposal, decision, review, confirmation, execution."""
        return await self._client._request(self._client._audit_trail_call(decision_id))

    async def verify(self) -> AuditVerification:
        """Walk the hash chain and report the first broken link, if any."""
        return await self._client._request(self._client._audit_verify_call())


__all__ = [
    "AsyncAegisClient",
    "AsyncAudit",
    "AsyncCapabilities",
    "AsyncDecisions",
    "AsyncPageIterator",
    "AsyncPolicies",
]
