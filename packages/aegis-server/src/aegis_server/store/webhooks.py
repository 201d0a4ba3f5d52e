"""Webhook endpoints and their deliveries: endpoints made, changed, rotated and deleted (each change
audited, never with the secret or the URL's path, which may be a credential such as a Slack webhook's);
the fan-out of outbox events into deliveries; and the claiming and recording of delivery attempts. The
checks of an endpoint's fields are in `webhook_input`, the records in `webhook_records` (both re-exported).

Every step that several replicas may run at once is a conditional write checked by row count or a
`ON CONFLICT DO NOTHING` insert:

- fan-out inserts one delivery per (event, endpoint) and marks the events dispatched in one transaction;
- a delivery is claimed by moving its `next_attempt_at` from "due" to a lease (`now + timeout + margin`):
  the replica whose UPDATE changed the row sends that attempt; a process killed mid-attempt leaves the
  delivery due again once the lease passes;
- an attempt's result is written only while the lease it was claimed with still holds.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_server.ids import new_id
from aegis_server.store.cursors import check_limit, decode_cursor, encode_cursor
from aegis_server.store.database import Room
from aegis_server.store.keys import UNSET, Unset
from aegis_server.store.schema import webhook_deliveries, webhook_endpoints, webhook_events
from aegis_server.store.webhook_input import (
    ALL_EVENTS,
    BODY_FORMATS,
    DELIVERY_STATUSES,
    WEBHOOK_TEST,
    WebhookInputError,
    check_capability_glob,
    check_description,
    check_event_types,
    check_format,
    check_min_risk,
    check_url,
    new_webhook_secret,
)
from aegis_server.store.webhook_records import ClaimedDelivery, DeliveryResult, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ALL_EVENTS",
    "BODY_FORMATS",
    "DELIVERY_STATUSES",
    "WEBHOOK_TEST",
    "ClaimedDelivery",
    "DeliveryResult",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookInputError",
    "Webhooks",
    "new_webhook_secret",
]

_DELIVERY_LISTING = "webhook_deliveries"


def _endpoint_from_row(row: Any, counts: Mapping[str, int] | None = None) -> WebhookEndpoint:
    return WebhookEndpoint(
        endpoint_id=row.endpoint_id,
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types),
        capability_glob=row.capability_glob,
        min_risk=row.min_risk,
        body_format=row.body_format,
        enabled=bool(row.enabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
        counts=dict(counts or {}),
    )


def _delivery_from_row(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=int(row.row_id),
        event_id=row.event_id,
        event_type=row.event_type,
        decision_id=row.decision_id,
        endpoint_id=row.endpoint_id,
        status=row.status,
        attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


def _host(url: str) -> str:
    """What the audit records of an endpoint's URL: its host (the path may be a credential)."""
    return urlsplit(url).hostname or ""


_DELIVERY_COLUMNS = (
    webhook_deliveries,
    webhook_events.c.event_type,
    webhook_events.c.decision_id,
)


class Webhooks(Room):
    """The webhook endpoints of one database, and the outbox's deliveries to them."""

    # -- endpoints ------------------------------------------------------------------------------------

    async def create_endpoint(
        self,
        url: str,
        event_types: Sequence[str],
        *,
        description: str = "",
        capability_glob: str | None = None,
        min_risk: float | None = None,
        body_format: str = "standard",
        enabled: bool = True,
        by: str = "cli",
    ) -> tuple[WebhookEndpoint, str]:
        """Make an endpoint; returns it and its signing secret (shown once). `WebhookInputError` on a bad
        field. `by`: who made it (an API key id, or "cli")."""
        values = {
            "url": check_url(url),
            "event_types": list(check_event_types(event_types)),
            "description": check_description(description),
            "capability_glob": check_capability_glob(capability_glob),
            "min_risk": check_min_risk(min_risk),
            "body_format": check_format(body_format),
            "enabled": bool(enabled),
        }
        secret = new_webhook_secret()
        now = self._db.now()
        endpoint_id = new_id("whe_")
        async with self._db.write() as conn:
            await conn.execute(
                sa.insert(webhook_endpoints).values(
                    endpoint_id=endpoint_id, secret=secret, created_at=now, updated_at=now, created_by=by, **values
                )
            )
            await self._audit(conn, now, "webhook_endpoint_created", endpoint_id, by, values)
            row = await self._endpoint_row(conn, endpoint_id)
        assert row is not None
        return _endpoint_from_row(row), secret

    async def update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | Unset = UNSET,
        event_types: Sequence[str] | Unset = UNSET,
        description: str | Unset = UNSET,
        capability_glob: str | Unset | None = UNSET,
        min_risk: float | Unset | None = UNSET,
        body_format: str | Unset = UNSET,
        enabled: bool | Unset = UNSET,
        by: str = "cli",
    ) -> WebhookEndpoint | None:
        """Change what is given (None clears the capability or risk filter); None when no such endpoint."""
        values: dict[str, Any] = {}
        if not isinstance(url, Unset):
            values["url"] = check_url(url)
        if not isinstance(event_types, Unset):
            values["event_types"] = list(check_event_types(event_types))
        if not isinstance(description, Unset):
            values["description"] = check_description(description)
        if not isinstance(capability_glob, Unset):
            values["capability_glob"] = check_capability_glob(capability_glob)
        if not isinstance(min_risk, Unset):
            values["min_risk"] = check_min_risk(min_risk)
        if not isinstance(body_format, Unset):
            values["body_format"] = check_format(body_format)
        if not isinstance(enabled, Unset):
            values["enabled"] = bool(enabled)
        now = self._db.now()
        async with self._db.write() as conn:
            if values:
                changed = await conn.execute(
                    sa.update(webhook_endpoints)
                    .where(webhook_endpoints.c.endpoint_id == endpoint_id)
                    .values(updated_at=now, **values)
                )
                if changed.rowcount != 1:
                    return None
                await self._audit(conn, now, "webhook_endpoint_updated", endpoint_id, by, values)
            row = await self._endpoint_row(conn, endpoint_id)
        return _endpoint_from_row(row) if row is not None else None

    async def rotate_secret(self, endpoint_id: str, *, by: str = "cli") -> str | None:
        """Give the endpoint a new signing secret (returned, shown once); attempts from now on are signed with
        it. None when no such endpoint."""
        secret = new_webhook_secret()
        now = self._db.now()
        async with self._db.write() as conn:
            changed = await conn.execute(
                sa.update(webhook_endpoints)
                .where(webhook_endpoints.c.endpoint_id == endpoint_id)
                .values(secret=secret, updated_at=now)
            )
            if changed.rowcount != 1:
                return None
            await self._audit(conn, now, "webhook_secret_rotated", endpoint_id, by, {})
        return secret

    async def delete_endpoint(self, endpoint_id: str, *, by: str = "cli") -> bool:
        """Delete the endpoint and its deliveries (pending ones are never sent); False when no such endpoint."""
        now = self._db.now()
        async with self._db.write() as conn:
            row = await self._endpoint_row(conn, endpoint_id)
            if row is None:
                return False
            await conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id))
            await conn.execute(sa.delete(webhook_endpoints).where(webhook_endpoints.c.endpoint_id == endpoint_id))
            await self._audit(conn, now, "webhook_endpoint_deleted", endpoint_id, by, {"url": row.url})
        return True

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint with its delivery counts, or None."""
        async with self._db.read() as conn:
            row = await self._endpoint_row(conn, endpoint_id)
            if row is None:
                return None
            counts = await self._counts(conn, endpoint_id)
        return _endpoint_from_row(row, counts.get(endpoint_id))

    async def list_endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first, with its delivery counts."""
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(webhook_endpoints).order_by(
                        webhook_endpoints.c.created_at, webhook_endpoints.c.endpoint_id
                    )
                )
            ).all()
            counts = await self._counts(conn, None)
        return [_endpoint_from_row(row, counts.get(row.endpoint_id)) for row in rows]

    @staticmethod
    async def _endpoint_row(conn: AsyncConnection, endpoint_id: str) -> Any:
        query = sa.select(webhook_endpoints).where(webhook_endpoints.c.endpoint_id == endpoint_id)
        return (await conn.execute(query)).first()

    @staticmethod
    async def _counts(conn: AsyncConnection, endpoint_id: str | None) -> dict[str, dict[str, int]]:
        query = sa.select(
            webhook_deliveries.c.endpoint_id, webhook_deliveries.c.status, sa.func.count().label("n")
        ).group_by(webhook_deliveries.c.endpoint_id, webhook_deliveries.c.status)
        if endpoint_id is not None:
            query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
        counts: dict[str, dict[str, int]] = {}
        for row in (await conn.execute(query)).all():
            per_endpoint = counts.setdefault(row.endpoint_id, dict.fromkeys(DELIVERY_STATUSES, 0))
            per_endpoint[row.status] = int(row.n)
        return counts

    async def _audit(
        self,
        conn: AsyncConnection,
        now: datetime,
        event_type: str,
        endpoint_id: str,
        by: str,
        values: Mapping[str, Any],
    ) -> None:
        payload: dict[str, Any] = {"endpoint_id": endpoint_id, "by": by}
        for name, value in values.items():
            payload["url_host" if name == "url" else name] = _host(value) if name == "url" else value
        await self._db.audit(conn, now).append(event_type, payload=payload)

    # -- deliveries: listing and manual actions --------------------------------------------------------

    async def list_deliveries(
        self,
        endpoint_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[WebhookDelivery], str | None]:
        """One page of deliveries, newest first (of one endpoint, or of all), optionally of one status, and
        the cursor of the next page (None on the last). `InvalidCursor` for a cursor not issued here."""
        check_limit(limit)
        if status is not None and status not in DELIVERY_STATUSES:
            raise WebhookInputError("status", f"status must be one of {', '.join(DELIVERY_STATUSES)}")
        query = sa.select(*_DELIVERY_COLUMNS).join(
            webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id
        )
        if endpoint_id is not None:
            query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        if cursor is not None:
            query = query.where(webhook_deliveries.c.row_id < decode_cursor(cursor, _DELIVERY_LISTING, "desc"))
        query = query.order_by(webhook_deliveries.c.row_id.desc()).limit(limit + 1)
        async with self._db.read() as conn:
            rows = list((await conn.execute(query)).all())
        items = [_delivery_from_row(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return items, None
        return items, encode_cursor(_DELIVERY_LISTING, "desc", items[-1].delivery_id)

    async def get_delivery(self, endpoint_id: str, delivery_id: int) -> WebhookDelivery | None:
        query = (
            sa.select(*_DELIVERY_COLUMNS)
            .join(webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id)
            .where(webhook_deliveries.c.row_id == delivery_id, webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _delivery_from_row(row) if row is not None else None

    async def retry_delivery(self, endpoint_id: str, delivery_id: int) -> WebhookDelivery | None:
        """Put a failed delivery back to pending, due now, with a fresh retry schedule (the same event, so
        the same `webhook-id`). None when it does not exist or is not failed (`get_delivery` tells which)."""
        now = self._db.now()
        async with self._db.write() as conn:
            changed = await conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.row_id == delivery_id,
                    webhook_deliveries.c.endpoint_id == endpoint_id,
                    webhook_deliveries.c.status == "failed",
                )
                .values(status="pending", attempts=0, next_attempt_at=now)
            )
        if changed.rowcount != 1:
            return None
        self._db.events_written()
        return await self.get_delivery(endpoint_id, delivery_id)

    async def queue_test_event(self, endpoint_id: str) -> WebhookDelivery | None:
        """Queue a `webhook.test` event for this endpoint alone (whatever its filter, even disabled it is
        kept pending until enabled); None when no such endpoint."""
        now = self._db.now()
        event_id = new_id("msg_")
        async with self._db.write() as conn:
            if await self._endpoint_row(conn, endpoint_id) is None:
                return None
            data = {"endpoint_id": endpoint_id, "message": "A test event from AEGIS: this endpoint is reachable."}
            await conn.execute(
                sa.insert(webhook_events).values(
                    event_id=event_id,
                    event_type=WEBHOOK_TEST,
                    decision_id="",
                    capability="",
                    risk_score=0.0,
                    data=data,
                    created_at=now,
                    dispatched_at=now,  # fanned out here, to this endpoint only
                )
            )
            inserted = await conn.execute(
                sa.insert(webhook_deliveries).values(**_new_delivery(event_id, endpoint_id, now))
            )
            key = inserted.inserted_primary_key
            assert key is not None
            delivery_id = int(key[0])
        self._db.events_written()
        return await self.get_delivery(endpoint_id, delivery_id)

    # -- the dispatcher's side ------------------------------------------------------------------------

    async def fan_out(self, *, limit: int = 200) -> int:
        """Turn up to `limit` undispatched events (oldest first) into deliveries to the endpoints that want
        them (made no later than the event; a disabled endpoint's deliveries wait for it to be enabled), and
        mark them dispatched, in one transaction. Returns how many events were dispatched (call again while
        it returns `limit`)."""
        now = self._db.now()
        pending = (
            sa.select(webhook_events)
            .where(webhook_events.c.dispatched_at.is_(None))
            .order_by(webhook_events.c.row_id)
            .limit(limit)
        )
        if self._db.postgres:
            pending = pending.with_for_update(skip_locked=True)  # replicas fan out disjoint batches
        async with self._db.read() as conn:  # most polls find nothing: no write transaction for them
            waiting = await conn.scalar(
                sa.select(webhook_events.c.row_id).where(webhook_events.c.dispatched_at.is_(None)).limit(1)
            )
        if waiting is None:
            return 0
        async with self._db.write() as conn:
            events = (await conn.execute(pending)).all()
            if not events:
                return 0
            endpoints = [_endpoint_from_row(row) for row in (await conn.execute(sa.select(webhook_endpoints))).all()]
            deliveries = [
                _new_delivery(event.event_id, endpoint.endpoint_id, now)
                for event in events
                for endpoint in endpoints
                if endpoint.created_at <= event.created_at
                and endpoint.wants(event.event_type, event.capability, event.risk_score)
            ]
            if deliveries:
                insert = self._db.upsert(webhook_deliveries).on_conflict_do_nothing(
                    index_elements=["event_id", "endpoint_id"]
                )
                await conn.execute(insert, deliveries)
            await conn.execute(
                sa.update(webhook_events)
                .where(webhook_events.c.row_id.in_([event.row_id for event in events]))
                .values(dispatched_at=now)
            )
        return len(events)

    async def prune(self, before: datetime, *, limit: int = 5000) -> int:
        """Forget what is done with: deliveries delivered or failed before `before`, then up to `limit`
        events made before it that no delivery waits for (an event no server fanned out by then too).
        Returns how many events were deleted (call again while it returns `limit`)."""
        async with self._db.write() as conn:
            await conn.execute(
                sa.delete(webhook_deliveries).where(
                    webhook_deliveries.c.status.in_(("delivered", "failed")), webhook_deliveries.c.created_at < before
                )
            )
            waited_for = (
                sa.select(webhook_deliveries.c.row_id)
                .where(webhook_deliveries.c.event_id == webhook_events.c.event_id)
                .exists()
            )
            done = (
                sa.select(webhook_events.c.row_id)
                .where(webhook_events.c.created_at < before, ~waited_for)
                .order_by(webhook_events.c.row_id)
                .limit(limit)
                .scalar_subquery()
            )
            deleted = await conn.execute(sa.delete(webhook_events).where(webhook_events.c.row_id.in_(done)))
        return int(deleted.rowcount)

    async def claim_due(
        self,
        *,
        limit: int,
        lease_seconds: float,
        per_endpoint: int | None = None,
        in_flight: Mapping[str, int] | None = None,
    ) -> list[ClaimedDelivery]:
        """Claim up to `limit` due deliveries of enabled endpoints (oldest due first) for one attempt each:
        their `next_attempt_at` moves to a lease `lease_seconds` ahead, so no other worker sends them until
        the attempt's result is recorded or the lease passes. With `per_endpoint`, no endpoint gets more than
        that many attempts at once, counting the caller's `in_flight` ones (endpoint id -> attempts): a
        receiver that hangs cannot take every slot from the others."""
        if limit <= 0:
            return []
        busy = collections.Counter(in_flight or {})
        now = self._db.now()
        lease = now + timedelta(seconds=lease_seconds)
        due = (
            sa.select(
                webhook_deliveries.c.row_id,
                webhook_deliveries.c.attempts,
                webhook_deliveries.c.next_attempt_at,
                webhook_events.c.event_id,
                webhook_events.c.event_type,
                webhook_events.c.created_at.label("event_created_at"),
                webhook_events.c.data,
                webhook_endpoints.c.endpoint_id,
                webhook_endpoints.c.url,
                webhook_endpoints.c.secret,
                webhook_endpoints.c.body_format,
            )
            .join(webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id)
            .join(webhook_endpoints, webhook_endpoints.c.endpoint_id == webhook_deliveries.c.endpoint_id)
            .where(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now,
                webhook_endpoints.c.enabled,
            )
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.row_id)
        )
        candidates: list[Any] = []
        async with self._db.read() as conn:
            while len(candidates) < limit:
                # Each round leaves out the endpoints at their share and the rows already taken, so the
                # oldest due deliveries of one busy endpoint never hide the other endpoints' deliveries.
                full = [
                    endpoint for endpoint, count in busy.items() if per_endpoint is not None and count >= per_endpoint
                ]
                query = due.where(
                    webhook_endpoints.c.endpoint_id.not_in(full),
                    webhook_deliveries.c.row_id.not_in([row.row_id for row in candidates]),
                ).limit(limit - len(candidates))
                rows = (await conn.execute(query)).all()
                for row in rows:
                    if per_endpoint is None or busy[row.endpoint_id] < per_endpoint:
                        busy[row.endpoint_id] += 1
                        candidates.append(row)
                if not rows or per_endpoint is None:
                    break
        if not candidates:
            return []
        claimed: list[ClaimedDelivery] = []
        async with self._db.write() as conn:
            for row in candidates:
                changed = await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.row_id == row.row_id,
                        webhook_deliveries.c.status == "pending",
                        webhook_deliveries.c.attempts == row.attempts,
                        webhook_deliveries.c.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=lease)
                )
                if changed.rowcount == 1:
                    claimed.append(
                        ClaimedDelivery(
                            delivery_id=int(row.row_id),
                            attempts=int(row.attempts),
                            lease=lease,
                            event_id=row.event_id,
                            event_type=row.event_type,
                            event_created_at=row.event_created_at,
                            data=row.data,
                            endpoint_id=row.endpoint_id,
                            url=row.url,
                            secret=row.secret,
                            body_format=row.body_format,
                        )
                    )
        return claimed

    async def record_attempt(self, claim: ClaimedDelivery, result: DeliveryResult, attempted_at: datetime) -> bool:
        """Record the attempt of `claim`: delivered, pending until `result.retry_at`, or failed. False when
        the lease no longer held (the delivery was deleted or retried manually, or the lease passed and
        another worker claimed it): nothing is written then."""
        values: dict[str, Any] = {
            "attempts": claim.attempts + 1,
            "last_attempt_at": attempted_at,
            "last_status_code": result.status_code,
            "last_error": result.error,
        }
        if result.delivered:
            values.update(status="delivered", delivered_at=attempted_at, last_error=None)
        elif result.retry_at is not None:
            values["next_attempt_at"] = result.retry_at
        else:
            values["status"] = "failed"
        async with self._db.write() as conn:
            changed = await conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.row_id == claim.delivery_id,
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.attempts == claim.attempts,
                    webhook_deliveries.c.next_attempt_at == claim.lease,
                )
                .values(**values)
            )
        return changed.rowcount == 1

    async def failed_deliveries(self, *, limit: int = 50) -> list[WebhookDelivery]:
        """The most recent failed deliveries of every endpoint, newest first."""
        items, _ = await self.list_deliveries(None, status="failed", limit=limit)
        return items


def _new_delivery(event_id: str, endpoint_id: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "endpoint_id": endpoint_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": None,
        "delivered_at": None,
        "created_at": now,
    }
