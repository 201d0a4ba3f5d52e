"""`AegisClient`: the synchronous client. All logic lives in `_base.BaseClient`; this module only sends,
sleeps and loops."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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


class AegisClient(BaseClient):
    """Synchronous client of the AEGIS platform.

    ```python
    with AegisClient(endpoint="http://127.0.0.1:8000", api_key="aegis_sk_...") as aegis:
        decision = aegis.propose(actor={"id": "agent-001", "type": "ai-agent"},
                                 action={"capability": "database.query", "parameters": {"query": "SELECT 1"}})
    ```

    Arguments win over the environment (`AEGIS_ENDPOINT`, `AEGIS_API_KEY`, `AEGIS_TIMEOUT`, `AEGIS_RETRIES`,
    `AEGIS_LOG_LEVEL`). `timeout` is per HTTP request; `retries` is how many times a transient failure
    (connection error, timeout, 429, 500, 502, 503, 504) is retried after the first attempt, waiting
    `retry_delay * 2**n` seconds (with jitter, or the server's Retry-After; at most 30 s). Pass
    `http_client=httpx.Client(transport=...)` to supply your own transport or pool; the client then leaves
    closing it to you.
    """

    _sleep: Callable[[float], None]

    def __init__(
        self,
        endpoint: str | EllipsisType | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry_delay: float = 1.0,
        *,
        http_client: httpx.Client | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigurationError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__}"
                + (
                    " (use AsyncAegisClient for an httpx.AsyncClient)"
                    if isinstance(http_client, httpx.AsyncClient)
                    else ""
                )
                + ".",
                code="invalid_http_client",
            )
        super().__init__(resolve_config(endpoint, api_key, timeout, retries, retry_delay))
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)
        self._sleep = time.sleep
        self.decisions = Decisions(self)
        self.capabilities = Capabilities(self)
        self.policies = Policies(self)
        self.audit = Audit(self)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connection pool (only if this client created it). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AegisClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the send/sleep loop ----------------------------------------------------------------------

    def _request(self, call: _Call[T]) -> T:
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
                response = self._http.send(request)
            except httpx.RequestError as exc:
                retry = self._on_transport_error(call, exc, attempt)
            else:
                result = self._on_response(call, response, attempt)
                if not isinstance(result, _Retry):
                    return result
                retry = result
            self._sleep(retry.delay)
            attempt += 1

    # -- governance -------------------------------------------------------------------------------

    def propose(
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
        return self._request(call)

    def confirm(self, decision: Decision, *, timeout: float | None = None) -> Decision:
        """Resubmit the proposal behind a REQUIRE_CONFIRMATION decision with its token, after the user
        consented; returns the new decision (ALLOW, with `parent_decision_id` set)."""
        result = self._request(self._confirm_call(decision, timeout))
        return self._confirmed(decision, result)

    def wait_for_review(self, decision: Decision, *, timeout: float | None = DEFAULT_REVIEW_TIMEOUT) -> Decision:
        """Wait until a reviewer resolves an ESCALATE decision. Approved: returns the ALLOW decision of the
        resubmitted proposal. Denied or expired: returns the final DENY decision. Raises ReviewTimeoutError
        (with `.decision`) after `timeout` seconds (None: wait until the platform's review deadline)."""
        deadline = self._begin_review_wait(decision, timeout)
        current = decision
        while True:
            status = self._review_status(current)
            if status == "approved":
                return self._confirmed(decision, self._request(self._approved_call(decision, current)))
            if status != "pending":
                self._proposals.forget(decision.decision_id)
                return current
            call, wait = self._next_poll(decision, current, deadline)
            started = self._clock()
            current = self._request(call)
            if self._review_status(current) == "pending":
                pause = self._poll_pause(started, wait, deadline)
                if pause > 0:
                    self._sleep(pause)

    def health(self) -> Health:
        """Liveness of the platform (no authentication needed)."""
        return self._request(self._health_call())

    def ready(self) -> Health:
        """Readiness: store reachable and policies loaded. A not-ready platform answers with status != "ok"."""
        return self._request(self._ready_call())


class SyncPageIterator(Generic[T]):
    """Iterates every item of a listing, fetching the next page only when needed."""

    def __init__(self, client: AegisClient, pager: _Pager[T]) -> None:
        self._client = client
        self._pager = pager

    def __iter__(self) -> SyncPageIterator[T]:
        return self

    def __next__(self) -> T:
        while not self._pager.buffer:
            call = self._pager.next_call()
            if call is None:
                raise StopIteration
            self._pager.accept(self._client._request(call))
        return self._pager.buffer.popleft()


class Decisions:
    """`client.decisions`: read, list, review and report on decisions."""

    def __init__(self, client: AegisClient) -> None:
        self._client = client

    def get(self, decision_id: str, *, wait: int | None = None) -> Decision:
        """One decision. With `wait` (0..60 s) the platform holds the request until a pending review resolves."""
        return self._client._request(self._client._get_decision_call(decision_id, wait))

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
    ) -> SyncPageIterator[Decision]:
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
        return SyncPageIterator(self._client, pager)

    def review(self, decision_id: str, *, approve: bool, note: str | None = None) -> Decision:
        """Approve or deny a pending ESCALATE decision (needs the `governance:review` scope)."""
        return self._client._request(self._client._review_call(decision_id, approve, note))

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
        return self._client._request(self._client._execution_call(decision_id, status, result, error, duration_ms))


class Capabilities:
    """`client.capabilities`: the registry of capabilities and their parameter schemas."""

    def __init__(self, client: AegisClient) -> None:
        self._client = client

    def list(self) -> list[Capability]:
        return self._client._request(self._client._capabilities_list_call())

    def get(self, name: str) -> Capability:
        return self._client._request(self._client._capability_get_call(name))

    def create(self, capability: Capability | Mapping[str, Any]) -> Capability:
        return self._client._request(self._client._capability_create_call(capability))


class Policies:
    """`client.policies`: manage the policies stored on the platform (needs `policies:manage` to change them)."""

    def __init__(self, client: AegisClient) -> None:
        self._client = client

    def list(self) -> list[Policy]:
        return self._client._request(self._client._policies_list_call())

    def get(self, name: str) -> Policy:
        return self._client._request(self._client._policy_get_call(name))

    def create(self, policy: Policy | Mapping[str, Any]) -> Policy:
        return self._client._request(self._client._policy_create_call(policy))

    def update(self, name: str, policy: Policy | Mapping[str, Any]) -> Policy:
        return self._client._request(self._client._policy_update_call(name, policy))

    def delete(self, name: str) -> None:
        self._client._request(self._client._policy_delete_call(name))

    def validate(self, policy: Policy | Mapping[str, Any]) -> PolicyValidation:
        """Dry run: would the active set still compile with this policy added or replaced?"""
        return self._client._request(self._client._policy_validate_call(policy))


class Audit:
    """`client.audit`: the hash-chained audit log."""

    def __init__(self, client: AegisClient) -> None:
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
    ) -> SyncPageIterator[AuditRecord]:
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
        return SyncPageIterator(self._client, pager)

    def trail(self, decision_id: str) -> AuditTrail:
        """Every record of one decision: proposal, decision, review, confirmation, execution."""
        return self._client._request(self._client._audit_trail_call(decision_id))

    def verify(self) -> AuditVerification:
        """Walk the hash chain and report the first broken link, if any."""
        return self._client._request(self._client._audit_verify_call())


__all__ = ["AegisClient", "Audit", "Capabilities", "Decisions", "Policies", "SyncPageIterator"]
