"""`WebhookDispatcher`: delivers the outbox. One loop per server, woken when this process commits events
and every `webhook_poll_interval_seconds` (for events of other replicas, and retries that fell due):

1. fan-out: undispatched events become deliveries to the endpoints that want them (`Webhooks.fan_out`);
2. deliver: due deliveries are claimed for one attempt each (a lease in the database, so replicas never
   send one attempt twice) and POSTed, at most `max_in_flight` at once, signed per Standard Webhooks.
   2xx: delivered. Anything else, a timeout or a connection error: retried after the next wait of
   `webhook_retry_schedule_seconds` (or the receiver's longer Retry-After, capped), then failed once the
   schedule is exhausted. 410 Gone fails it at once.

Nothing here logs a secret or a URL's path (a Slack webhook URL is a credential): endpoints are named by
id and host.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httpx

from aegis_server.metrics import Metrics
from aegis_server.notifications.bodies import build_body
from aegis_server.notifications.signing import signed_headers
from aegis_server.retry_after import retry_after_seconds
from aegis_server.settings import Settings
from aegis_server.store import Store
from aegis_server.store.webhooks import ClaimedDelivery, DeliveryResult

__all__ = ["DEFAULT_PUBLIC_URL", "WebhookDispatcher"]

logger = logging.getLogger("aegis_server.webhooks")

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
# A claim outlives the request's timeout by this much (at most the timeout again), so the result of a slow
# answer is still recorded under its lease; a process killed mid-attempt leaves it to be retried after that.
_LEASE_MARGIN_SECONDS = 5.0
_RETRY_AFTER_CAP_SECONDS = 3600.0
_MAX_ERROR = 200
_FAN_OUT_BATCH = 200
_STOP_GRACE_SECONDS = 1.0


def _wall_clock() -> datetime:
    return datetime.now(timezone.utc)


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out waiting for the receiver"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect to the receiver"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the receiver closed the connection or answered malformed HTTP"
    return f"request failed ({type(exc).__name__})"


class WebhookDispatcher:
    """Delivers webhook events of `store` (see the module docstring). `start()` runs the loop as a task,
    `stop()` ends it (attempts still in flight after a second are abandoned, and retried after their
    lease). `run_once()` fans out, attempts what is due now and waits for those attempts (tests drive it)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        public_url: str | None = None,
        max_in_flight: int = 8,
        max_per_endpoint: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._webhooks = store.webhooks
        self._timeout = settings.webhook_timeout_seconds
        self._schedule = tuple(settings.webhook_retry_schedule_seconds)
        self._poll_interval = settings.webhook_poll_interval_seconds
        self._public_url = public_url or settings.public_url or DEFAULT_PUBLIC_URL
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._max_per_endpoint = max_per_endpoint  # a hanging receiver holds at most this many of the slots
        self._wall_clock = wall_clock or _wall_clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # a receiver is reached directly, never through the process's proxy settings
        )
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], str] = {}  # attempt -> its endpoint
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def public_url(self) -> str:
        return self._public_url

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._store.database.add_event_listener(self.wake)
        self._task = asyncio.create_task(self._run(), name="aegis-webhook-dispatcher")

    async def stop(self) -> None:
        self._store.database.remove_event_listener(self.wake)
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._in_flight:  # a short grace, so an answer on its way is recorded rather than sent again
            await asyncio.wait(list(self._in_flight), timeout=_STOP_GRACE_SECONDS)
        for attempt in list(self._in_flight):
            attempt.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._client.aclose()

    def wake(self) -> None:
        """Look for work now (called when this process commits events)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._fan_out()
                self._start_due(await self._claim())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the webhook dispatcher failed; retrying in %.1f s", self._poll_interval)
            await self._sleep()

    async def _sleep(self) -> None:
        """Until woken, or the poll interval passed. Not `asyncio.wait_for`: before Python 3.12 it loses a
        cancellation that arrives as the wait ends, and `stop()` would wait for this loop forever."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=self._poll_interval)
        finally:
            waiter.cancel()

    async def run_once(self) -> int:
        """Fan out, claim what is due and attempt it; returns the number of attempts made."""
        await self._fan_out()
        claims = await self._claim()
        await asyncio.gather(*(self._attempt(claim) for claim in claims))
        return len(claims)

    # -- the steps ------------------------------------------------------------------------------------

    async def _fan_out(self) -> None:
        while await self._webhooks.fan_out(limit=_FAN_OUT_BATCH) == _FAN_OUT_BATCH:
            pass

    async def _claim(self) -> list[ClaimedDelivery]:
        free = self._max_in_flight - len(self._in_flight)
        return await self._webhooks.claim_due(
            limit=free,
            lease_seconds=self._timeout + min(_LEASE_MARGIN_SECONDS, self._timeout),
            per_endpoint=self._max_per_endpoint,
            in_flight=collections.Counter(self._in_flight.values()),
        )

    def _start_due(self, claims: list[ClaimedDelivery]) -> None:
        for claim in claims:
            task = asyncio.create_task(self._attempt(claim))
            self._in_flight[task] = claim.endpoint_id
            task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()  # a slot is free: claim the next due delivery without waiting for the poll

    async def _attempt(self, claim: ClaimedDelivery) -> None:
        try:
            attempted_at = self._store.database.now()
            result = await self._send(claim)
            recorded = await self._webhooks.record_attempt(claim, result, attempted_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("recording webhook delivery %s failed; it is retried after its lease", claim.delivery_id)
            return
        if not recorded:
            return
        if result.retry_at is not None:  # wake for it, rather than at the next poll
            delay = (result.retry_at - self._store.database.now()).total_seconds()
            asyncio.get_running_loop().call_later(max(0.0, delay), self.wake)
        outcome = "delivered" if result.delivered else ("retrying" if result.retry_at is not None else "failed")
        if self._metrics is not None:
            self._metrics.webhook_deliveries.labels(result=outcome).inc()
        if outcome == "failed":
            logger.warning(
                "webhook delivery %s of event %s to endpoint %s (%s) failed after %d attempt(s): %s",
                claim.delivery_id,
                claim.event_id,
                claim.endpoint_id,
                urlsplit(claim.url).hostname,
                claim.attempts + 1,
                result.error or f"HTTP {result.status_code}",
            )

    async def _send(self, claim: ClaimedDelivery) -> DeliveryResult:
        body = build_body(claim.body_format, claim.event_type, claim.event_created_at, claim.data, self._public_url)
        headers = signed_headers(claim.secret, claim.event_id, body, self._wall_clock())
        try:
            # The whole attempt within the timeout (httpx's own is per read); the answer's body is never read.
            status, retry_after = await asyncio.wait_for(self._post(claim.url, body, headers), self._timeout)
        except asyncio.TimeoutError:
            return self._not_delivered(claim, None, "timed out waiting for the receiver", None)
        except httpx.InvalidURL as exc:  # stored before the URL check knew it: no retry can work
            return DeliveryResult(delivered=False, error=f"the endpoint's URL cannot be requested: {exc}")
        except httpx.HTTPError as exc:
            return self._not_delivered(claim, None, _describe_error(exc), None)
        except Exception as exc:  # the transport's own failure (e.g. an IDNA codec error): an attempt that failed
            return self._not_delivered(claim, None, f"{type(exc).__name__}: {exc}", None)
        if 200 <= status < 300:
            return DeliveryResult(delivered=True, status_code=status)
        if status == 410:
            return DeliveryResult(delivered=False, status_code=410, error="HTTP 410 Gone: the receiver is gone")
        error = f"HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed; use the final URL)"
        return self._not_delivered(claim, status, error, retry_after)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        async with self._client.stream("POST", url, content=body, headers=headers) as response:
            return response.status_code, retry_after_seconds(response.headers.get("retry-after"), self._wall_clock())

    def _not_delivered(
        self, claim: ClaimedDelivery, status_code: int | None, error: str, retry_after: float | None
    ) -> DeliveryResult:
        attempt = claim.attempts + 1
        if attempt > len(self._schedule):
            return DeliveryResult(delivered=False, status_code=status_code, error=error[:_MAX_ERROR])
        wait = self._schedule[attempt - 1]
        if retry_after is not None:
            wait = max(wait, min(retry_after, _RETRY_AFTER_CAP_SECONDS))
        retry_at = self._store.database.now() + timedelta(seconds=wait)
        return DeliveryResult(delivered=False, status_code=status_code, error=error[:_MAX_ERROR], retry_at=retry_at)
