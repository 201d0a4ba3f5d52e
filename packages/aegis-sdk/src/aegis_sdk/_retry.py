"""The retry policy: which failures are transient, how long to wait before the next attempt (exponential
backoff with jitter, or the server's Retry-After), and whether a failed attempt may still have been applied."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

MAX_RETRY_DELAY = 30.0
"""No single wait between two attempts is longer than this (backoff and Retry-After alike)."""
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    """The verdict that an attempt failed transiently: sleep `delay` seconds and send again."""

    delay: float


def backoff_delay(attempt: int, retry_delay: float, retry_after: float | None, jitter: float) -> float:
    """Seconds to wait before retry number `attempt + 1`: the server's Retry-After when it sent one,
    else `retry_delay * 2**attempt` reduced by up to 25 % of jitter (`jitter` in [0, 1)); both capped at
    MAX_RETRY_DELAY."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_DELAY)
    base = min(retry_delay * (2.0**attempt), MAX_RETRY_DELAY)
    return base * (1.0 - 0.25 * jitter)


def retry_after(response: httpx.Response, details: Mapping[str, Any] | None = None) -> float | None:
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


def is_transient(exc: httpx.RequestError) -> bool:
    """A transport failure worth another attempt (not, e.g., an unsupported URL scheme)."""
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def may_have_arrived(exc: httpx.RequestError) -> bool:
    """Whether the request may have reached the platform before the transport failed."""
    return not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


__all__ = [
    "MAX_RETRY_DELAY",
    "RETRYABLE_STATUSES",
    "Retry",
    "backoff_delay",
    "is_transient",
    "may_have_arrived",
    "retry_after",
]
