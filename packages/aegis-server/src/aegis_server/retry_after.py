"""A receiver's `Retry-After` header (RFC 9110: a number of seconds or an HTTP date), as seconds to wait: shared
by the webhook dispatcher and the audit export's HTTP sink."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_seconds"]


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from `now`, or None when the header is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - now).total_seconds())
    return None
