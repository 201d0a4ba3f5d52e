"""`AsyncAegisClient`: the asyncio client. The logic lives in `_request.BaseClient` and in `resources/`; this
module only sends, sleeps and loops (`_run`, the mirror of `_client.py`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from types import EllipsisType, TracebackType
from typing import Any, TypeVar, cast

import httpx
from opentelemetry.trace import Span

from aegis_sdk._config import resolve_config
from aegis_sdk._constants import DEFAULT_REVIEW_TIMEOUT
from aegis_sdk._loop_clients import LoopClients
from aegis_sdk._reporter import REPORT_FLUSH_TIMEOUT, AsyncReporter, ReportStats
from aegis_sdk._request import BaseClient, Call, Reply, Steps, check_http_client, transport_failure
from aegis_sdk._resources import AsyncAudit, AsyncCapabilities, AsyncDecisions, AsyncPolicies
from aegis_sdk._resources.governance import (
    ProposalMemory,
    confirm_call,
    propose_call,
    remembered_capability,
    review_steps,
)
from aegis_sdk._resources.health import health_call, ready_call
from aegis_sdk._tracing import client_span, record_result, tracing_on
from aegis_sdk.models import Action, Actor, Context, Decision, Health

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

    One client may be shared by every event loop of the process (a module global awaited from several
    `asyncio.run` calls, Starlette `TestClient`s or pytest-asyncio tests): a client that owns its pool
    keeps one connection pool per loop. An `http_client=` you pass is used as it is, on the loop it is
    bound to.
    """

    _http: httpx.AsyncClient
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
        check_http_client(http_client, httpx.AsyncClient, httpx.Client, "AegisClient")
        super().__init__(resolve_config(endpoint, api_key, timeout, retries, retry_delay))
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)
        self._loop_pools = LoopClients(lambda: self._http, lambda: httpx.AsyncClient(timeout=self.timeout))
        self._sleep = asyncio.sleep
        self._proposals = ProposalMemory()
        self.decisions = AsyncDecisions(self)
        self.capabilities = AsyncCapabilities(self)
        self.policies = AsyncPolicies(self)
        self.audit = AsyncAudit(self)
        self._reporter = AsyncReporter(self)

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send the execution reports still queued (`decisions.report_execution_later`, waiting up to 10 s),
        then release the connection pool (only if this client created it). Safe to call twice."""
        if self._closed:
            return
        await self._reporter.aclose()
        self._closed = True
        if self._owns_http:
            await self._loop_pools.aclose()
            # Marks it closed even when its connections belonged to a loop that has closed (they close
            # when collected, as that loop can no longer run their shutdown).
            with contextlib.suppress(RuntimeError):
                await self._http.aclose()

    @property
    def report_stats(self) -> ReportStats:
        """What the background execution reporter did so far (`decisions.report_execution_later`)."""
        return self._reporter.queue.stats()

    async def flush_reports(self, timeout: float | None = REPORT_FLUSH_TIMEOUT) -> bool:
        """Send what is queued and wait until every execution report is answered (or `timeout` seconds); True
        when none is left."""
        return await self._reporter.flush(timeout)

    async def __aenter__(self) -> AsyncAegisClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the send/sleep loop ----------------------------------------------------------------------

    async def _run(self, steps: Steps[T], operation: str, capability: str | None = None) -> T:
        """Drive `steps` inside the call's span `aegis.<operation>` (when tracing is on)."""
        if not tracing_on():
            return await self._drive(steps, None)
        with client_span(operation, self.endpoint, capability) as span:
            result = await self._drive(steps, span)
            record_result(span, result)
            return result

    async def _drive(self, steps: Steps[T], span: Span | None) -> T:
        """Send each request `steps` yields, sleep each pause, hand back every answer."""
        reply: Reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return cast(T, done.value)
            if isinstance(step, httpx.Request):
                http = self._loop_pools.current() if self._owns_http else self._http
                try:
                    reply = await http.send(step)
                    if span is not None:
                        span.set_attribute("http.response.status_code", reply.status_code)
                except httpx.RequestError as exc:
                    reply = exc
                except Exception as exc:  # any transport failure must become an AegisError
                    reply = transport_failure(step, exc)
            else:
                await self._sleep(step)
                reply = None

    async def _request(self, call: Call[T]) -> T:
        return await self._run(self._attempts(call), call.operation, call.capability)

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
        call = propose_call(self._proposals, actor, action, context, confirmation_token, idempotency_key, timeout)
        return await self._request(call)

    async def confirm(self, decision: Decision, *, timeout: float | None = None) -> Decision:
        """Resubmit the proposal behind a REQUIRE_CONFIRMATION decision with its token, after the user
        consented; returns the new decision (ALLOW, with `parent_decision_id` set)."""
        return await self._request(confirm_call(self._proposals, decision, timeout))

    async def wait_for_review(self, decision: Decision, *, timeout: float | None = DEFAULT_REVIEW_TIMEOUT) -> Decision:
        """Wait until a reviewer resolves an ESCALATE decision. Approved: returns the ALLOW decision of the
        resubmitted proposal. Denied or expired: returns the final DENY decision. Raises ReviewTimeoutError
        (with `.decision`) after `timeout` seconds (None: wait until the platform's review deadline)."""
        capability = remembered_capability(self._proposals, decision)
        return await self._run(review_steps(self, self._proposals, decision, timeout), "wait_for_review", capability)

    async def health(self) -> Health:
        """Liveness of the platform (no authentication needed)."""
        return await self._request(health_call())

    async def ready(self) -> Health:
        """Readiness: store reachable and policies loaded. A not-ready platform answers with status != "ok"."""
        return await self._request(ready_call())


__all__ = ["AsyncAegisClient"]
