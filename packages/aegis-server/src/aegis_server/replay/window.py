"""The replay window's bounds as people write them: a duration back from now (`30m`, `12h`, `7d`, `2w`) or an
RFC 3339 time with a zone (`2026-12-01T00:00:00Z`). Shared by the CLI and the API."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["WindowError", "parse_moment", "replay_window"]

_DURATION = re.compile(r"^(\d{1,7})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WindowError(ValueError):
    """A bound that is neither a duration nor an RFC 3339 time, or an empty window; the message says why."""


def parse_moment(text: str, now: datetime, name: str) -> datetime:
    """`text` as an aware UTC time: a duration back from `now`, or an RFC 3339 time with a zone."""
    value = text.strip()
    duration = _DURATION.match(value)
    if duration:
        try:
            return now - timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
        except (OverflowError, ValueError):
            raise WindowError(f"{name} {text!r} reaches back before the year 1; use a shorter duration") from None
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError:
        raise WindowError(
            f"{name} {text!r} is neither a duration (e.g. 30m, 12h, 7d, 2w) nor an RFC 3339 time "
            "(e.g. 2026-12-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise WindowError(f"{name} {text!r} has no time zone; add one (e.g. {value}Z for UTC, or {value}+01:00)")
    try:
        return moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise WindowError(f"{name} {text!r} is outside the years 1..9999 once converted to UTC") from None


def replay_window(since: str, until: str | None, now: datetime, names: tuple[str, str]) -> tuple[datetime, datetime]:
    """`[since, until)` (until: `now` when None); `names` are how the caller calls the two bounds."""
    start = parse_moment(since, now, names[0])
    end = parse_moment(until, now, names[1]) if until is not None else now
    if start >= end:
        raise WindowError(
            f"the window is empty: {names[0]} ({start.isoformat()}) must be before {names[1]} ({end.isoformat()})"
        )
    return start, end
