"""The no-I/O request core that `AegisClient` and `AsyncAegisClient` share (the idea of anthropic-sdk's
`_base_client.py`).

A `Call` describes one API call: what to send on every attempt and how to read the answer. `BaseClient`
turns a call into `Steps`, a generator that yields what to do next (an `httpx.Request` to send, or a float:
seconds to sleep) and receives each request's answer (an `httpx.Response` or the `httpx.RequestError` the
transport raised); its return value is the call's result. It decides retries, maps error answers to the
exception tree and parses answers. Each client only drives the steps: it sends, sleeps and loops
(`_client.py` blocking, `_async_client.py` awaited), so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import httpx

from aegis_sdk._config import ClientConfig
from aegis_sdk._constants import USER_AGENT
from aegis_sdk._error_mapping import error_from_response
from aegis_sdk._parsing import request_id
from aegis_sdk._retry import RETRYABLE_STATUSES, Retry, backoff_delay, is_transient, may_have_arrived, retry_after
from aegis_sdk._tracing import inject_context
from aegis_sdk.errors import AegisError, APIConnectionError, APITimeoutError, ConfigurationError, MalformedResponseError

T = TypeVar("T")
C = TypeVar("C")

logger = logging.getLogger("aegis_sdk")

Reply = httpx.Response | httpx.RequestError | None
"""What a client hands back to the steps: the answer to the request, the transport's error, or None (after a
sleep, and to start)."""
Steps = Generator[httpx.Request | float, Reply, T]
"""The I/O a call needs, one step at a time; the generator's return value is the call's result."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical API call: everything needed to send it (on every attempt) and to read its answer."""

    method: str
    path: str  # below /api/v1, already quoted
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    timeout: float | None = None  # per attempt; None: the client's timeout
    idempotency_key: str | None = None
    retry: bool = True
    accept: frozenset[int] = frozenset()  # error statuses whose body is still the answer (ready: 503)
    # A call that is not idempotent (review, execution report) may have been applied by an attempt whose
    # answer was lost; `reconcile` reads the error of a later attempt and returns the answer the lost one
    # carried (or None: the error stands). `applied` records that such an attempt happened.
    reconcile: Callable[[AegisError], T | None] | None = None
    applied: list[bool] = field(default_factory=list, compare=False, repr=False)
    operation: str = "request"  # the public call, for its span `aegis.<operation>`
    capability: str | None = None  # the proposal's capability, for the span (propose, confirm)


def check_http_client(given: object, wanted: type[Any], other: type[Any], other_client: str) -> None:
    """Refuse an `http_client=` of the wrong kind, naming the client that takes it."""
    if given is not None and not isinstance(given, wanted):
        hint = f" (use {other_client} for an httpx.{other.__name__})" if isinstance(given, other) else ""
        raise ConfigurationError(
            f"http_client must be an httpx.{wanted.__name__}, got {type(given).__name__}{hint}.",
            code="invalid_http_client",
        )


class SyncSender(Protocol):
    """What a synchronous namespace or page iterator needs of its client (`AegisClient`)."""

    @property
    def timeout(self) -> float: ...

    def _request(self, call: Call[T]) -> T: ...


class AsyncSender(Protocol):
    """What an asynchronous namespace or page iterator needs of its client (`AsyncAegisClient`)."""

    @property
    def timeout(self) -> float: ...

    async def _request(self, call: Call[T]) -> T: ...


class Resource(Generic[C]):
    """A namespace of a client (`client.decisions`, ...): its methods build calls and let the client send them."""

    def __init__(self, client: C) -> None:
        self._client = client


class BaseClient:
    """State and logic shared by both clients; no I/O. Tests may replace `_random` (jitter source, returns
    a float in [0, 1)) and `_clock` (monotonic seconds) on an instance; each client adds `_sleep`."""

    _config: ClientConfig
    _http: httpx.Client | httpx.AsyncClient
    _random: Callable[[], float]
    _clock: Callable[[], float]

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._random = random.random
        self._clock = time.monotonic
        self._closed = False

    # -- configuration ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The platform root the client talks to (without /api/v1)."""
        return self._config.endpoint

    @property
    def timeout(self) -> float:
        """Seconds allowed for each HTTP request (each attempt)."""
        return self._config.timeout

    @property
    def retries(self) -> int:
        """Retries after the first attempt on transient failures."""
        return self._config.retries

    @property
    def retry_delay(self) -> float:
        """Base of the exponential backoff, in seconds."""
        return self._config.retry_delay

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, timeout={self.timeout!r}, retries={self.retries!r})"

    # -- one call, attempt by attempt -------------------------------------------------------------

    def _attempts(self, call: Call[T]) -> Steps[T]:
        """Send `call`, retrying transient failures after a pause; return its parsed answer or raise."""
        self._check_open()
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method,
                self._config.base_url + call.path,
                params=call.params,
                content=call.body,
                headers=self._headers(call),
                timeout=self._request_timeout(call),
            )
            logger.debug("%s %s attempt=%d", call.method, call.path, attempt + 1)
            reply = yield request
            if isinstance(reply, httpx.Response):
                outcome = self._on_response(call, reply, attempt)
            elif isinstance(reply, httpx.RequestError):
                outcome = self._on_transport_error(call, reply, attempt)
            else:
                raise TypeError(f"a request step needs an httpx.Response or httpx.RequestError, got {reply!r}")
            if not isinstance(outcome, Retry):
                return outcome
            yield outcome.delay
            attempt += 1

    def _check_open(self) -> None:
        if self._closed:
            raise AegisError(
                f"This {type(self).__name__} is closed; create a new client (or use it inside a `with` block "
                "and make calls before the block ends).",
                code="client_closed",
            )

    def _headers(self, call: Call[Any]) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._config.api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        inject_context(headers)  # the current span: the call's own (see the clients' `_run`)
        return headers

    def _request_timeout(self, call: Call[Any]) -> float:
        return self._config.timeout if call.timeout is None else call.timeout

    def _max_retries(self, call: Call[Any]) -> int:
        return self._config.retries if call.retry else 0

    def _backoff(self, attempt: int, seconds_after: float | None) -> float:
        return backoff_delay(attempt, self._config.retry_delay, seconds_after, self._random())

    def _on_response(self, call: Call[T], response: httpx.Response, attempt: int) -> T | Retry:
        """Parse a success, schedule a retry of a transient failure, or raise the mapped error."""
        status = response.status_code
        answer_id = request_id(response)
        logger.debug("%s %s -> %d request_id=%s attempt=%d", call.method, call.path, status, answer_id, attempt + 1)
        if 200 <= status < 300 or status in call.accept:
            try:
                return call.parse(response)
            except MalformedResponseError:
                if status in call.accept:  # not the expected body after all: report the error status
                    raise error_from_response(response, attempts=attempt + 1) from None
                raise
        if status in RETRYABLE_STATUSES and attempt < self._max_retries(call):
            if status >= 500:
                call.applied.append(True)  # a gateway's 5xx may come after the platform acted
            delay = self._backoff(attempt, retry_after(response))
            logger.info(
                "%s %s -> %d request_id=%s; retry %d/%d in %.2fs",
                call.method,
                call.path,
                status,
                answer_id,
                attempt + 1,
                self._max_retries(call),
                delay,
            )
            return Retry(delay)
        error = error_from_response(response, attempts=attempt + 1)
        if call.reconcile is not None and call.applied:
            answer = call.reconcile(error)
            if answer is not None:
                logger.info(
                    "%s %s: an earlier attempt was applied (its answer was lost); returning it, request_id=%s",
                    call.method,
                    call.path,
                    answer_id,
                )
                return answer
        raise error

    def _on_transport_error(self, call: Call[Any], exc: httpx.RequestError, attempt: int) -> Retry:
        """Schedule a retry of a transient transport failure, or raise it as an AegisError."""
        if is_transient(exc) and attempt < self._max_retries(call):
            if may_have_arrived(exc):
                call.applied.append(True)
            delay = self._backoff(attempt, None)
            logger.info(
                "%s %s failed (%s); retry %d/%d in %.2fs",
                call.method,
                call.path,
                type(exc).__name__,
                attempt + 1,
                self._max_retries(call),
                delay,
            )
            return Retry(delay)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        if isinstance(exc, httpx.TimeoutException):
            raise APITimeoutError(
                f"{call.method} {call.path} timed out after {self._request_timeout(call):g}s ({type(exc).__name__}, "
                f"{attempts}); raise timeout= / AEGIS_TIMEOUT or check the platform at {self.endpoint}.",
                code="timeout",
            ) from exc
        cause = exc.__cause__
        if isinstance(cause, RuntimeError) and "loop" in str(cause).lower():
            advice = (
                "the http_client= passed to the client is bound to another event loop; let the client make its "
                "own pool (one per loop), or create the httpx.AsyncClient on the loop that uses it"
            )
        elif isinstance(exc, httpx.TransportError) and type(exc) is httpx.TransportError:
            advice = "the HTTP transport failed; check the http_client= passed to the client"
        else:
            advice = "check endpoint= / AEGIS_ENDPOINT and that the server runs"
        raise APIConnectionError(
            f"Could not reach the AEGIS platform at {self.endpoint} for {call.method} {call.path} "
            f"({type(exc).__name__}: {exc}; {attempts}); {advice}.",
            code="connection_error",
        ) from exc


def transport_failure(request: httpx.Request, exc: Exception) -> httpx.TransportError:
    """An exception a transport raised that is not an httpx error (a pool used on a closed event loop, a
    closed `http_client=`, a failing custom transport), as a transport error the steps turn into an
    `APIConnectionError` without retrying; the original stays its `__cause__`."""
    error = httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request)
    error.__cause__ = exc
    return error


__all__ = [
    "AsyncSender",
    "BaseClient",
    "Call",
    "Reply",
    "Resource",
    "Steps",
    "SyncSender",
    "check_http_client",
    "transport_failure",
]
