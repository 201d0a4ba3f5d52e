"""Helpers shared by the store tests (imported by name: the test folders are not packages)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from aegis_server.store import NewDecision

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

MakeDecision = Callable[..., NewDecision]


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
