"""The filters of the paged listings (`GET /governance/decisions`, `GET /audit/log`), read from a query.

`read_listing_query` turns query parameters into `ListingFilters` and a page size, refusing bad values
with the contract's 422 `invalid_request` (the error names the parameter, as the server's does). The
SDK's fake platform reads its listings with it; the server reads the same parameters through FastAPI and
could use it for a hand-written endpoint. `since` is inclusive and `until` exclusive, in UTC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Literal

from aegis_sdk._wire.envelope import ApiError, validation_error
from aegis_sdk.models import ACTOR_TYPES, OUTCOMES

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "REVIEW_STATUSES",
    "ListingFilters",
    "Order",
    "query_error",
    "read_listing_query",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
Order = Literal["asc", "desc"]
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "denied", "expired")


@dataclasses.dataclass(frozen=True)
class ListingFilters:
    """What a listing keeps: every field given must equal the item's (None: any). `event_type` filters the
    audit log only, `actor_type` the decisions only, `review_status` the decisions (in the audit log: the
    records of decisions in that review state). `since` is inclusive, `until` exclusive; a naive time is UTC.
    `order`: None is the listing's default (decisions newest first, audit records in chain order).
    The one definition of a listing's filters: the server's store takes the same class."""

    actor_id: str | None = None
    actor_type: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    review_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_type: str | None = None
    decision_id: str | None = None
    order: Order | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                object.__setattr__(self, name, moment.replace(tzinfo=timezone.utc))

    def in_window(self, moment: datetime) -> bool:
        """Whether `moment` lies in [since, until)."""
        if self.since is not None and moment < self.since:
            return False
        return self.until is None or moment < self.until


def query_error(name: str, message: str, where: str = "query") -> ApiError:
    """422 `invalid_request` for one bad parameter (`where`: "query" or "header")."""
    errors = [{"loc": [where, name], "msg": message, "type": "value_error"}]
    return validation_error(422, "invalid_request", f"The request is invalid — {name}: {message}.", {"errors": errors})


def _time(params: Mapping[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise query_error(name, "must be an RFC 3339 time such as 2025-01-31T12:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _limit(params: Mapping[str, str]) -> int:
    raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    problem = f"must be an integer between 1 and {MAX_PAGE_SIZE}"
    try:
        limit = int(raw)
    except ValueError:
        raise query_error("limit", problem) from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise query_error("limit", problem)
    return limit


def read_listing_query(params: Mapping[str, str], *, audit: bool) -> tuple[ListingFilters, int]:
    """The filters and page size of a decisions (`audit=False`) or audit-log (`audit=True`) query.
    The decisions listing checks `outcome` and `review_status` against their values; the audit log
    takes any `outcome` (its records also carry execution statuses)."""
    outcome = params.get("outcome")
    if not audit and outcome is not None and outcome not in OUTCOMES:
        raise query_error("outcome", f"must be one of {', '.join(OUTCOMES)}")
    review_status = None if audit else params.get("review_status")
    if review_status is not None and review_status not in REVIEW_STATUSES:
        raise query_error("review_status", f"must be one of {', '.join(REVIEW_STATUSES)}")
    actor_type = None if audit else params.get("actor_type")
    if actor_type is not None and actor_type not in ACTOR_TYPES:
        raise query_error("actor_type", f"must be one of {', '.join(ACTOR_TYPES)}")
    filters = ListingFilters(
        actor_id=params.get("actor_id"),
        actor_type=actor_type,
        capability=params.get("capability"),
        outcome=outcome,
        session_id=params.get("session_id"),
        review_status=review_status,
        since=_time(params, "since"),
        until=_time(params, "until"),
        event_type=params.get("event_type") if audit else None,
        decision_id=params.get("decision_id"),
    )
    return filters, _limit(params)
