"""The no-I/O core shared by `AegisClient` and `AsyncAegisClient`.

It validates input, builds every request (`_Call`), decides whether and how long to wait before a retry,
maps error answers to the exception tree and parses answers into models. The two clients only send,
sleep and loop (see `_client.py` and `_async_client.py`), so they cannot drift apart.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import platform
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError

from aegis_sdk._config import ClientConfig
from aegis_sdk._version import __version__
from aegis_sdk.errors import (
    AegisError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfirmationError,
    ConfirmationExpiredError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    ExecutionReportError,
    GovernanceError,
    IdempotencyConflictError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    ParameterValidationError,
    PermissionDeniedError,
    PolicyError,
    RateLimitError,
    ReviewError,
    ReviewTimeoutError,
    ServerError,
    UnknownCapabilityError,
)
from aegis_sdk.models import (
    OUTCOMES,
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
    ExecutionReport,
    ExecutionStatus,
    Health,
    Outcome,
    Policy,
    PolicyValidation,
    Proposal,
    ReviewRequest,
    ReviewStatus,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger("aegis_sdk")

MAX_RETRY_DELAY = 30.0
"""No single wait between two attempts is longer than this (backoff and Retry-After alike)."""
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_WAIT_SECONDS = 60
"""The platform long-polls a decision for at most this long per request (`?wait=`)."""
REVIEW_POLL_PAUSE = 1.0
"""Pause between two polls when the platform answers a long-poll early with the review still pending."""
PROPOSAL_MEMORY_SIZE = 1024
"""How many pending proposals (REQUIRE_CONFIRMATION / ESCALATE) a client remembers for confirm()."""
DEFAULT_REVIEW_TIMEOUT = 600.0
MAX_PAGE_SIZE = 200

USER_AGENT = f"aegis-sdk/{__version__} python/{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}"

_DECISION_ADAPTER: TypeAdapter[Decision] = TypeAdapter(Decision)


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
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


@dataclass(frozen=True)
class _Retry:
    """The core's verdict that an attempt failed transiently: sleep `delay` seconds and send again."""

    delay: float


@dataclass(frozen=True)
class _Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass
class _Pager(Generic[T]):
    """State of one auto-paging listing (shared by the sync and the async iterator)."""

    build: Callable[[str | None], _Call[_Page[T]]]
    buffer: deque[T] = field(default_factory=deque)
    cursor: str | None = None
    done: bool = False
    seen: set[str] = field(default_factory=set)

    def next_call(self) -> _Call[_Page[T]] | None:
        """The request for the next page, or None when every page was read."""
        if self.done:
            return None
        return self.build(self.cursor)

    def accept(self, page: _Page[T]) -> None:
        self.buffer.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            self.done = True
            return
        if cursor in self.seen:
            self.done = True
            raise MalformedResponseError(
                "The platform returned a page cursor it had already returned; stopping instead of looping forever.",
                code="cursor_loop",
            )
        self.seen.add(cursor)
        self.cursor = cursor


class _ProposalMemory:
    """Bounded LRU of the proposals behind REQUIRE_CONFIRMATION / ESCALATE decisions, keyed by decision id,
    so `confirm()` and `wait_for_review()` can resubmit exactly what was proposed. Thread-safe."""

    def __init__(self, size: int = PROPOSAL_MEMORY_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, Proposal] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, decision_id: str, proposal: Proposal) -> None:
        with self._lock:
            self._items[decision_id] = proposal
            self._items.move_to_end(decision_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def recall(self, decision_id: str) -> Proposal | None:
        with self._lock:
            proposal = self._items.get(decision_id)
            if proposal is not None:
                self._items.move_to_end(decision_id)
            return proposal

    def forget(self, decision_id: str) -> None:
        with self._lock:
            self._items.pop(decision_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# ---------------------------------------------------------------------------------------------
# Input validation (before any request)
# ---------------------------------------------------------------------------------------------


def _describe_validation(exc: pydantic.ValidationError, prefix: str = "") -> tuple[str, list[dict[str, Any]]]:
    """Field paths and messages of a validation error, never the offending values (they may be secrets)."""
    problems: list[dict[str, Any]] = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(part) for part in (*([prefix] if prefix else []), *error["loc"]))
        problems.append({"loc": loc or "(body)", "msg": error["msg"], "type": error["type"]})
    text = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems)
    return text, problems


def _invalid(what: str, exc: pydantic.ValidationError, prefix: str = "") -> InvalidRequestError:
    text, problems = _describe_validation(exc, prefix)
    return InvalidRequestError(
        f"Invalid {what}, nothing was sent: {text}.", code="invalid_request", details={"errors": problems}
    )


def _validate_model(model: type[M], value: object, what: str) -> M:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        raise _invalid(what, exc, what) from None


def _encode(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"The {what} is not JSON-serialisable, nothing was sent: {exc}. Pass only str, int, float, bool, "
            "None, lists and dicts (datetimes and other pydantic-serialisable values are converted).",
            code="invalid_request",
        ) from None


def _dump(model: BaseModel, what: str) -> bytes:
    try:
        data = model.model_dump(mode="json", exclude_none=True)
    except PydanticSerializationError as exc:
        raise InvalidRequestError(
            f"The {what} is not JSON-serialisable, nothing was sent: {exc}. Pass only str, int, float, bool, "
            "None, lists and dicts.",
            code="invalid_request",
        ) from None
    return _encode(data, what)


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise InvalidRequestError(
            f"{name} must be a non-empty string, got {got}.",
            code="invalid_request",
        )
    return value


def _segment(value: object, name: str) -> str:
    return quote(_check_id(value, name), safe="")


def _check_timeout(value: float | None, name: str = "timeout") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise InvalidRequestError(
            f"{name} must be a positive number of seconds, got {value!r}.", code="invalid_request"
        )
    return float(value)


def _check_idempotency_key(value: object) -> str:
    if value is None:
        return str(uuid.uuid4())
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 255
        or not value.isascii()
        or not value.isprintable()
        or any(ch.isspace() for ch in value)
    ):
        raise InvalidRequestError(
            "idempotency_key must be 1 to 255 printable ASCII characters without spaces (a UUID is ideal).",
            code="invalid_request",
        )
    return value


def _time_param(value: str | datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRequestError(
                f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)); got a naive datetime.",
                code="invalid_request",
            )
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidRequestError(f"{name} must be an RFC 3339 string or an aware datetime.", code="invalid_request")


def _list_params(
    *,
    limit: int | None,
    cursor: str | None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    **filters: str | None,
) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise InvalidRequestError(f"{name} must be a non-empty string.", code="invalid_request")
        params[name] = value
    for name, moment in (("since", since), ("until", until)):
        text = _time_param(moment, name)
        if text is not None:
            params[name] = text
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequestError(
                f"limit (the page size) must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}; "
                "iteration fetches further pages on its own.",
                code="invalid_request",
            )
        params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return params


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


def _request_id(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("x-request-id")
    return value


def _where(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.path}"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type")
        raise MalformedResponseError(
            f"{_where(response)} answered HTTP {response.status_code} with a body that is not JSON "
            f"({kind}, {len(response.content)} bytes); is the endpoint an AEGIS platform?",
            status_code=response.status_code,
            code="malformed_response",
            request_id=_request_id(response),
        ) from None


def _malformed(response: httpx.Response, what: str, problem: str, code: str = "malformed_response") -> AegisError:
    return MalformedResponseError(
        f"{_where(response)} answered with a malformed {what}: {problem}.",
        status_code=response.status_code,
        code=code,
        request_id=_request_id(response),
    )


def _decision_from(obj: object, response: httpx.Response) -> Decision:
    if not isinstance(obj, dict):
        raise _malformed(response, "decision", f"expected a JSON object, got {type(obj).__name__}")
    outcome = obj.get("outcome")
    if isinstance(outcome, str) and outcome not in OUTCOMES:
        raise MalformedResponseError(
            f"{_where(response)} answered with outcome {outcome[:40]!r}, which aegis-sdk {__version__} does not know "
            f"(known: {', '.join(OUTCOMES)}); upgrade aegis-sdk. Treat the action as not allowed.",
            status_code=response.status_code,
            code="unknown_outcome",
            request_id=_request_id(response),
        )
    try:
        return _DECISION_ADAPTER.validate_python(obj)
    except pydantic.ValidationError as exc:
        text, _ = _describe_validation(exc)
        raise _malformed(response, "decision", text) from None


def _parse_decision(response: httpx.Response) -> Decision:
    return _decision_from(_json(response), response)


def _model_from(model: type[M], obj: object, response: httpx.Response) -> M:
    if isinstance(obj, dict) and model.model_config.get("extra") == "forbid":
        # Request models double as answers: tolerate fields a newer platform adds.
        obj = {key: value for key, value in obj.items() if key in model.model_fields}
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        text, _ = _describe_validation(exc)
        raise _malformed(response, model.__name__, text) from None


def _model_parser(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return _model_from(model, _json(response), response)

    return parse


def _items_of(body: object, response: httpx.Response, what: str) -> list[Any]:
    """A listing answer: a bare JSON array or an object with `items`."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        items: list[Any] = body["items"]
        return items
    raise _malformed(response, what, "expected a JSON array or an object with an `items` array")


def _list_parser(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    def parse(response: httpx.Response) -> list[M]:
        return [_model_from(model, item, response) for item in _items_of(_json(response), response, model.__name__)]

    return parse


def _page_parser(item: Callable[[object, httpx.Response], T]) -> Callable[[httpx.Response], _Page[T]]:
    def parse(response: httpx.Response) -> _Page[T]:
        body = _json(response)
        items = _items_of(body, response, "page")
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if cursor is not None and not isinstance(cursor, str):
            raise _malformed(response, "page", "next_cursor is not a string")
        return _Page([item(obj, response) for obj in items], cursor or None)

    return parse


def _audit_record(obj: object, response: httpx.Response) -> AuditRecord:
    return _model_from(AuditRecord, obj, response)


def _parse_nothing(response: httpx.Response) -> None:
    return None


def _retry_after(response: httpx.Response, details: Mapping[str, Any] | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), else from `details.retry_after`."""
    header = response.headers.get("retry-after")
    if header:
        header = header.strip()
        try:
            seconds = float(header)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
        else:
            if math.isfinite(seconds):
                return max(0.0, seconds)
    value = (details or {}).get("retry_after")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


_GOVERNANCE_CODES: dict[str, type[GovernanceError]] = {
    "unknown_capability": UnknownCapabilityError,
    "invalid_parameters": ParameterValidationError,
    "confirmation_used": ConfirmationUsedError,
    "confirmation_expired": ConfirmationExpiredError,
    "confirmation_mismatch": ConfirmationMismatchError,
    "confirmation_invalid": ConfirmationError,
    "not_pending": ReviewError,
    "self_review": ReviewError,
    "already_reported": ExecutionReportError,
    "not_allowed": ExecutionReportError,
    "not_proposer": ExecutionReportError,
    "idempotency_conflict": IdempotencyConflictError,
    "invalid_policy": PolicyError,
    "policy_conflict": PolicyError,
}
_TYPES: dict[str, type[AegisError]] = {
    "validation_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found": NotFoundError,
    "rate_limit_error": RateLimitError,
    "server_error": ServerError,
}
_HINTS: dict[type[AegisError], str] = {
    AuthenticationError: "check api_key= / AEGIS_API_KEY",
    PermissionDeniedError: "use a key with the required scope",
    NotFoundError: "check the id or name, and that endpoint= points at the platform root",
    RateLimitError: "slow down or raise the platform's rate limit",
    ServerError: "the platform failed; retry later or check its logs",
}


def _class_for_status(status: int) -> type[AegisError]:
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if status in (400, 413, 415, 422):
        return InvalidRequestError
    return APIStatusError


def error_from_response(response: httpx.Response, *, attempts: int = 1) -> AegisError:
    """Map an error answer (the platform's envelope, or anything a proxy sent) to the exception tree."""
    status = response.status_code
    header_id = _request_id(response)
    envelope: Mapping[str, Any] | None = None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        candidate = body["error"]
        if isinstance(candidate.get("code"), str) and isinstance(candidate.get("message"), str):
            envelope = candidate
    details: dict[str, Any] = {}
    if envelope is not None:
        error_type = envelope.get("type") if isinstance(envelope.get("type"), str) else None
        code: str = envelope["code"]
        message: str = envelope["message"]
        request_id = envelope.get("request_id") if isinstance(envelope.get("request_id"), str) else header_id
        if isinstance(envelope.get("details"), dict):
            details = dict(envelope["details"])
        if error_type == "governance_error":
            cls: type[AegisError] = _GOVERNANCE_CODES.get(code, GovernanceError)
        else:
            cls = _TYPES.get(error_type or "", _class_for_status(status))
    else:
        error_type = None
        code = f"http_{status}"
        cls = _class_for_status(status)
        kind = response.headers.get("content-type", "no content type")
        hint = _HINTS.get(cls, "is endpoint= the AEGIS platform root?")
        message = (
            f"{_where(response)} failed with HTTP {status} {response.reason_phrase} and no AEGIS error body "
            f"({kind}); {hint}"
        )
        request_id = header_id
    if attempts > 1:
        message = f"{message} (after {attempts} attempts)"
    common: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "request_id": request_id,
        "details": details,
        "error_type": error_type,
    }
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=_retry_after(response, details), **common)
    if cls is UnknownCapabilityError:
        suggestions = details.get("suggestions")
        names = [s for s in suggestions if isinstance(s, str)] if isinstance(suggestions, list) else []
        return UnknownCapabilityError(message, suggestions=names, **common)
    if cls is ParameterValidationError:
        errors = details.get("errors")
        problems = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        bad_field = details.get("field") if isinstance(details.get("field"), str) else None
        return ParameterValidationError(message, field=bad_field, errors=problems, **common)
    return cls(message, **common)


# ---------------------------------------------------------------------------------------------
# The core
# ---------------------------------------------------------------------------------------------


class BaseClient:
    """State and logic shared by both clients; no I/O. Tests may replace `_random` (jitter source, returns
    a float in [0, 1)) and `_clock` (monotonic seconds) on an instance; each client adds `_sleep`."""

    _config: ClientConfig
    _random: Callable[[], float]
    _clock: Callable[[], float]

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._random = random.random
        self._clock = time.monotonic
        self._proposals = _ProposalMemory()
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

    # -- sending --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AegisError(
                f"This {type(self).__name__} is closed; create a new client (or use it inside a `with` block "
                "and make calls before the block ends).",
                code="client_closed",
            )

    def _url(self, call: _Call[Any]) -> str:
        return self._config.base_url + call.path

    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._config.api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        return headers

    def _request_timeout(self, call: _Call[Any]) -> float:
        return self._config.timeout if call.timeout is None else call.timeout

    def _max_retries(self, call: _Call[Any]) -> int:
        return self._config.retries if call.retry else 0

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt + 1`: the server's Retry-After when it sent one,
        else `retry_delay * 2**attempt` reduced by up to 25 % of jitter; both capped at MAX_RETRY_DELAY."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_DELAY)
        base = min(self._config.retry_delay * (2.0**attempt), MAX_RETRY_DELAY)
        return base * (1.0 - 0.25 * self._random())

    def _log_attempt(self, call: _Call[Any], attempt: int) -> None:
        logger.debug("%s %s attempt=%d", call.method, call.path, attempt + 1)

    def _on_response(self, call: _Call[T], response: httpx.Response, attempt: int) -> T | _Retry:
        """Parse a success, schedule a retry of a transient failure, or raise the mapped error."""
        status = response.status_code
        request_id = _request_id(response)
        logger.debug("%s %s -> %d request_id=%s attempt=%d", call.method, call.path, status, request_id, attempt + 1)
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
            delay = self._backoff(attempt, _retry_after(response))
            logger.info(
                "%s %s -> %d request_id=%s; retry %d/%d in %.2fs",
                call.method,
                call.path,
                status,
                request_id,
                attempt + 1,
                self._max_retries(call),
                delay,
            )
            return _Retry(delay)
        error = error_from_response(response, attempts=attempt + 1)
        if call.reconcile is not None and call.applied:
            answer = call.reconcile(error)
            if answer is not None:
                logger.info(
                    "%s %s: an earlier attempt was applied (its answer was lost); returning it, request_id=%s",
                    call.method,
                    call.path,
                    request_id,
                )
                return answer
        raise error

    def _on_transport_error(self, call: _Call[Any], exc: httpx.RequestError, attempt: int) -> _Retry:
        """Schedule a retry of a transient transport failure, or raise it as an AegisError."""
        transient = isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))
        if transient and attempt < self._max_retries(call):
            if not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
                call.applied.append(True)  # the request may have reached the platform
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
            return _Retry(delay)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        if isinstance(exc, httpx.TimeoutException):
            raise APITimeoutError(
                f"{call.method} {call.path} timed out after {self._request_timeout(call):g}s ({type(exc).__name__}, "
                f"{attempts}); raise timeout= / AEGIS_TIMEOUT or check the platform at {self.endpoint}.",
                code="timeout",
            ) from exc
        raise APIConnectionError(
            f"Could not reach the AEGIS platform at {self.endpoint} for {call.method} {call.path} "
            f"({type(exc).__name__}: {exc}; {attempts}); check endpoint= / AEGIS_ENDPOINT and that the server runs.",
            code="connection_error",
        ) from exc

    # -- governance -------------------------------------------------------------------------------

    def _propose_call(
        self,
        actor: Actor | Mapping[str, Any],
        action: Action | Mapping[str, Any],
        context: Context | Mapping[str, Any] | None,
        *,
        confirmation_token: str | None,
        idempotency_key: str | None,
        timeout: float | None,
    ) -> _Call[Decision]:
        fields: dict[str, Any] = {"actor": actor, "action": action}
        if context is not None:
            fields["context"] = context
        try:
            proposal = Proposal.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise _invalid("proposal", exc) from None
        if confirmation_token is not None and (not isinstance(confirmation_token, str) or not confirmation_token):
            raise InvalidRequestError(
                "confirmation_token must be the non-empty token of a decision (decision.confirmation_token).",
                code="invalid_request",
            )
        return self._submit_call(proposal, confirmation_token, _check_idempotency_key(idempotency_key), timeout)

    def _submit_call(
        self, proposal: Proposal, token: str | None, idempotency_key: str, timeout: float | None
    ) -> _Call[Decision]:
        body = _dump(proposal.model_copy(update={"confirmation_token": token}), "proposal")
        memory = self._proposals

        def parse(response: httpx.Response) -> Decision:
            decision = _parse_decision(response)
            if decision.outcome in ("REQUIRE_CONFIRMATION", "ESCALATE"):
                memory.remember(decision.decision_id, proposal)
            logger.info(
                "decision %s outcome=%s capability=%s request_id=%s",
                decision.decision_id,
                decision.outcome,
                proposal.action.capability,
                _request_id(response),
            )
            return decision

        return _Call(
            "POST",
            "/governance/propose",
            parse,
            body=body,
            timeout=_check_timeout(timeout),
            idempotency_key=idempotency_key,
        )

    def _confirm_call(self, decision: Decision, timeout: float | None) -> _Call[Decision]:
        if not isinstance(decision, Decision):
            raise InvalidRequestError(
                f"confirm() takes the Decision that propose() returned, got {type(decision).__name__}.",
                code="invalid_request",
            )
        token = decision.confirmation_token
        if not token:
            hint = (
                " It is waiting for a reviewer: call wait_for_review(decision) instead."
                if decision.outcome == "ESCALATE"
                else ""
            )
            raise ConfirmationError(
                f"Decision {decision.decision_id} ({decision.outcome}) has no confirmation token, so there is "
                f"nothing to confirm.{hint}",
                code="no_confirmation_token",
            )
        proposal = self._recall(decision)
        return self._submit_call(proposal, token, str(uuid.uuid4()), timeout)

    def _recall(self, decision: Decision) -> Proposal:
        proposal = self._proposals.recall(decision.decision_id)
        if proposal is None:
            raise ConfirmationError(
                f"This client does not remember the proposal behind decision {decision.decision_id} (it was made "
                f"by another client or process, or fell out of the last {PROPOSAL_MEMORY_SIZE} pending "
                "proposals). Resubmit it yourself with the same actor, action and context: "
                "propose(actor, action, context, confirmation_token=decision.confirmation_token).",
                code="proposal_unknown",
            )
        return proposal

    def _confirmed(self, original: Decision, result: Decision) -> Decision:
        """The proposal stays remembered (until the LRU drops it): a second confirm() of the same decision
        then reaches the platform, which answers with the precise reason (`confirmation_used`)."""
        return result

    def _begin_review_wait(self, decision: Decision, timeout: float | None) -> float | None:
        """Check that waiting makes sense; return the monotonic deadline (None: no client-side limit)."""
        if not isinstance(decision, Decision):
            raise InvalidRequestError(
                f"wait_for_review() takes the Decision that propose() returned, got {type(decision).__name__}.",
                code="invalid_request",
            )
        if decision.outcome != "ESCALATE" and not (decision.review and decision.review.status != "pending"):
            raise ReviewError(
                f"Decision {decision.decision_id} is {decision.outcome}, not ESCALATE: there is no review to wait for.",
                code="not_escalated",
            )
        limit = _check_timeout(timeout)
        status = self._review_status(decision)
        if status in ("pending", "approved"):
            self._recall(decision)  # fail now, not after the wait, when the proposal cannot be resubmitted
        return None if limit is None else self._clock() + limit

    @staticmethod
    def _review_status(decision: Decision) -> ReviewStatus:
        return decision.review.status if decision.review is not None else "pending"

    def _next_poll(self, original: Decision, current: Decision, deadline: float | None) -> tuple[_Call[Decision], int]:
        """The next long-poll request and its wait, or ReviewTimeoutError when the deadline has passed."""
        wait = MAX_WAIT_SECONDS
        if deadline is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                until = f" (the review deadline is {current.expires_at})" if current.expires_at else ""
                raise ReviewTimeoutError(
                    f"No reviewer decided on {original.decision_id} within the wait_for_review() timeout{until}; "
                    "the review is still pending. Call wait_for_review() again to keep waiting.",
                    decision=current,
                    code="review_timeout",
                )
            wait = max(1, min(MAX_WAIT_SECONDS, math.ceil(remaining)))
        return self._get_decision_call(original.decision_id, wait), wait

    def _poll_pause(self, started: float, wait: int, deadline: float | None) -> float:
        """Seconds to pause when the platform answered a long-poll early and the review is still pending."""
        elapsed = self._clock() - started
        if elapsed >= wait:
            return 0.0
        pause = REVIEW_POLL_PAUSE
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - self._clock()))
        return pause

    def _approved_call(self, original: Decision, approved: Decision) -> _Call[Decision]:
        token = approved.confirmation_token
        if not token:
            raise MalformedResponseError(
                f"The platform reports the review of {original.decision_id} as approved but sent no token.",
                code="malformed_response",
            )
        return self._submit_call(self._recall(original), token, str(uuid.uuid4()), None)

    # -- decisions --------------------------------------------------------------------------------

    def _get_decision_call(self, decision_id: str, wait: int | None) -> _Call[Decision]:
        path = f"/governance/decisions/{_segment(decision_id, 'decision_id')}"
        if wait is None:
            return _Call("GET", path, _parse_decision)
        if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_SECONDS:
            raise InvalidRequestError(
                f"wait must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}, got {wait!r}.",
                code="invalid_request",
            )
        # The long-poll holds the request open for up to `wait` seconds: allow that on top of the timeout.
        return _Call("GET", path, _parse_decision, params={"wait": str(wait)}, timeout=self.timeout + wait)

    def _list_decisions_pager(
        self,
        *,
        actor_id: str | None,
        capability: str | None,
        outcome: Outcome | None,
        session_id: str | None,
        review_status: ReviewStatus | None,
        since: str | datetime | None,
        until: str | datetime | None,
        limit: int | None,
    ) -> _Pager[Decision]:
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidRequestError(f"outcome must be one of {', '.join(OUTCOMES)}.", code="invalid_request")
        if review_status is not None and review_status not in ("pending", "approved", "denied", "expired"):
            raise InvalidRequestError(
                "review_status must be one of pending, approved, denied, expired.", code="invalid_request"
            )
        filters = {
            "actor_id": actor_id,
            "capability": capability,
            "outcome": outcome,
            "session_id": session_id,
            "review_status": review_status,
        }
        _list_params(limit=limit, cursor=None, since=since, until=until, **filters)  # validate now
        parse = _page_parser(_decision_from)

        def build(cursor: str | None) -> _Call[_Page[Decision]]:
            params = _list_params(limit=limit, cursor=cursor, since=since, until=until, **filters)
            return _Call("GET", "/governance/decisions", parse, params=params)

        return _Pager(build)

    def _review_call(self, decision_id: str, approve: bool, note: str | None) -> _Call[Decision]:
        if not isinstance(approve, bool):
            raise InvalidRequestError("approve must be True or False.", code="invalid_request")
        body = _dump(_validate_model(ReviewRequest, {"approve": approve, "note": note}, "review"), "review")
        path = f"/governance/decisions/{_segment(decision_id, 'decision_id')}/review"
        wanted = "approved" if approve else "denied"

        def reconcile(error: AegisError) -> Decision | None:
            # The platform hands back the decision when this same reviewer already resolved it.
            stored = error.details.get("decision")
            if error.code != "not_pending" or error.details.get("status") != wanted or not isinstance(stored, dict):
                return None
            try:
                return _DECISION_ADAPTER.validate_python(stored)
            except pydantic.ValidationError:
                return None

        return _Call("POST", path, _parse_decision, body=body, reconcile=reconcile)

    def _execution_call(
        self,
        decision_id: str,
        status: ExecutionStatus,
        result: Any,
        error: ExecutionError | Mapping[str, Any] | None,
        duration_ms: float | None,
    ) -> _Call[ExecutionRecord]:
        report = _validate_model(
            ExecutionReport,
            {"status": status, "result": result, "error": error, "duration_ms": duration_ms},
            "execution report",
        )
        path = f"/governance/decisions/{_segment(decision_id, 'decision_id')}/execution"

        def reconcile(error: AegisError) -> ExecutionRecord | None:
            stored = error.details.get("execution")
            if error.code != "already_reported" or not isinstance(stored, dict) or stored.get("status") != status:
                return None
            try:
                return ExecutionRecord.model_validate(stored)
            except pydantic.ValidationError:
                return None

        return _Call(
            "POST", path, _model_parser(ExecutionRecord), body=_dump(report, "execution report"), reconcile=reconcile
        )

    # -- registry, policies, audit, health ----------------------------------------------------------

    def _capabilities_list_call(self) -> _Call[list[Capability]]:
        return _Call("GET", "/capabilities", _list_parser(Capability))

    def _capability_get_call(self, name: str) -> _Call[Capability]:
        return _Call("GET", f"/capabilities/{_segment(name, 'name')}", _model_parser(Capability))

    def _capability_create_call(self, capability: Capability | Mapping[str, Any]) -> _Call[Capability]:
        model = _validate_model(Capability, capability, "capability")
        return _Call("POST", "/capabilities", _model_parser(Capability), body=_dump(model, "capability"))

    def _policies_list_call(self) -> _Call[list[Policy]]:
        return _Call("GET", "/policies", _list_parser(Policy))

    def _policy_get_call(self, name: str) -> _Call[Policy]:
        return _Call("GET", f"/policies/{_segment(name, 'name')}", _model_parser(Policy))

    def _policy_create_call(self, policy: Policy | Mapping[str, Any]) -> _Call[Policy]:
        model = _validate_model(Policy, policy, "policy")
        return _Call("POST", "/policies", _model_parser(Policy), body=_dump(model, "policy"))

    def _policy_update_call(self, name: str, policy: Policy | Mapping[str, Any]) -> _Call[Policy]:
        model = _validate_model(Policy, policy, "policy")
        if model.name != name:
            raise InvalidRequestError(
                f"The policy's name {model.name!r} differs from the name {name!r} being updated; "
                "rename by deleting and creating.",
                code="invalid_request",
            )
        return _Call("PUT", f"/policies/{_segment(name, 'name')}", _model_parser(Policy), body=_dump(model, "policy"))

    def _policy_delete_call(self, name: str) -> _Call[None]:
        return _Call("DELETE", f"/policies/{_segment(name, 'name')}", _parse_nothing)

    def _policy_validate_call(self, policy: Policy | Mapping[str, Any]) -> _Call[PolicyValidation]:
        model = _validate_model(Policy, policy, "policy")
        return _Call("POST", "/policies/validate", _model_parser(PolicyValidation), body=_dump(model, "policy"))

    def _audit_log_pager(
        self,
        *,
        actor_id: str | None,
        capability: str | None,
        outcome: str | None,
        session_id: str | None,
        decision_id: str | None,
        event_type: str | None,
        since: str | datetime | None,
        until: str | datetime | None,
        limit: int | None,
    ) -> _Pager[AuditRecord]:
        filters = {
            "actor_id": actor_id,
            "capability": capability,
            "outcome": outcome,
            "session_id": session_id,
            "decision_id": decision_id,
            "event_type": event_type,
        }
        _list_params(limit=limit, cursor=None, since=since, until=until, **filters)
        parse = _page_parser(_audit_record)

        def build(cursor: str | None) -> _Call[_Page[AuditRecord]]:
            params = _list_params(limit=limit, cursor=cursor, since=since, until=until, **filters)
            return _Call("GET", "/audit/log", parse, params=params)

        return _Pager(build)

    def _audit_trail_call(self, decision_id: str) -> _Call[AuditTrail]:
        return _Call("GET", f"/audit/log/{_segment(decision_id, 'decision_id')}", _model_parser(AuditTrail))

    def _audit_verify_call(self) -> _Call[AuditVerification]:
        return _Call("GET", "/audit/verify", _model_parser(AuditVerification))

    def _health_call(self) -> _Call[Health]:
        return _Call("GET", "/health", _model_parser(Health))

    def _ready_call(self) -> _Call[Health]:
        # Readiness is a snapshot: no retries, and a 503 whose body is a health report is the answer.
        return _Call("GET", "/ready", _parse_health_report, retry=False, accept=frozenset({503}))


def _parse_health_report(response: httpx.Response) -> Health:
    body = _json(response)
    if isinstance(body, dict) and "error" in body:
        raise _malformed(response, "health report", "got an error envelope")
    return _model_from(Health, body, response)


__all__ = ["BaseClient", "error_from_response"]
