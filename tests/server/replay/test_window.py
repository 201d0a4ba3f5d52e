"""The window's bounds: durations and RFC 3339 times that reach outside the years 1..9999 are a `WindowError`
saying what to fix (the API's 422 invalid_window, the CLI's exit 2), never an OverflowError."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aegis_server.replay import WindowError, parse_moment, replay_window

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("9999999w", None, "since '9999999w' reaches back before the year 1"),
        ("9999999d", None, "since '9999999d' reaches back before the year 1"),
        ("0001-01-01T00:00:00+01:00", None, "outside the years 1..9999 once converted to UTC"),
        ("1d", "9999-12-31T23:59:59-01:00", "until '9999-12-31T23:59:59-01:00' is outside the years 1..9999"),
    ],
)
def test_bounds_beyond_the_calendar_are_window_errors(since: str, until: str | None, message: str) -> None:
    with pytest.raises(WindowError, match=message.replace(".", r"\.")):
        replay_window(since, until, NOW, ("since", "until"))


def test_bounds_at_the_edges_of_the_calendar_still_parse() -> None:
    assert parse_moment("0001-01-01T00:00:00Z", NOW, "since") == datetime(1, 1, 1, tzinfo=timezone.utc)
    assert parse_moment("9999-12-31T23:59:59Z", NOW, "until").year == 9999
