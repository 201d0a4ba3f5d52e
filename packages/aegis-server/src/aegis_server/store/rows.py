"""Rows: the one place that turns the store's inputs into table rows and audit entries, and rows back into
the wire models. The single-record write and the group commit build their rows with the same functions,
so a decision recorded either way is the same row with the same audit records."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from aegis_sdk._wire.canonical import normalise_json
from aegis_sdk.models import AuditRecord, Decision, Review, ShadowOutcome
from aegis_server.ids import new_audit_ref
from aegis_server.key_actors import parse_actor_patterns
from aegis_server.store.records import ApiKey, DecisionBinding, NewDecision

__all__ = [
    "api_key_from_row",
    "as_stored",
    "audit_entry",
    "audit_from_row",
    "binding_from_row",
    "decision_audit_entries",
    "decision_from_row",
    "decision_row",
    "format_timestamp",
    "idempotency_row",
    "parse_timestamp",
    "utcnow",
]

logger = logging.getLogger("aegis_server.store")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, the form the store writes (e.g. `2025-01-02T03:04:05.000006Z`)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; pass a timezone-aware time")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str | None) -> datetime | None:
    """A stored RFC 3339 text as an aware UTC datetime (a naive one is read as UTC); None when absent or
    not a timestamp."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- decisions ------------------------------------------------------------------------------------


def decision_row(record: NewDecision, now: datetime) -> dict[str, Any]:
    """The `decisions` row of a new decision (every column the store writes)."""
    decision = record.decision
    escalate = decision.outcome == "ESCALATE"
    review_deadline = record.review_deadline
    if escalate and review_deadline is None:
        review_deadline = parse_timestamp(decision.expires_at)
    if escalate and review_deadline is None:
        raise ValueError("an ESCALATE decision needs a review_deadline (or an expires_at) to be recorded")
    expires_at = decision.expires_at
    if escalate and expires_at is None and review_deadline is not None:
        expires_at = format_timestamp(review_deadline)
    token_expires_at = record.token_expires_at
    if token_expires_at is None and decision.confirmation_token is not None:
        token_expires_at = parse_timestamp(decision.expires_at)
    return {
        "decision_id": decision.decision_id,
        "outcome": decision.outcome,
        "reason": decision.reason,
        "risk_score": decision.risk_score,
        "constraints": normalise_json(decision.constraints),
        "policy_ids": list(decision.policy_ids),
        "timestamp": decision.timestamp,
        "created_at": record.created_at or parse_timestamp(decision.timestamp) or now,
        "audit_ref": decision.audit_ref or new_audit_ref(),
        "actor_id": record.actor_id,
        "actor_type": record.actor_type,
        "capability": record.capability,
        "session_id": record.session_id,
        "params_hash": record.params_hash,
        "api_key_id": record.api_key_id,
        "parent_decision_id": decision.parent_decision_id,
        "confirmation_token": decision.confirmation_token,
        "expires_at": expires_at,
        "token_expires_at": token_expires_at,
        "review_status": (decision.review.status if decision.review is not None else "pending") if escalate else None,
        "review_deadline": review_deadline if escalate else None,
        "token_used_at": None,
        "token_used_by": None,
        "reviewer": None,
        "review_note": None,
        "review_resolved_at": None,
        "policy_version": decision.policy_version,
        "shadow": [dataclasses.asdict(entry) for entry in decision.shadow] or None,
    }


def idempotency_row(record: NewDecision, now: datetime) -> dict[str, Any] | None:
    """The `idempotency_keys` row that claims the record's Idempotency-Key (None: it has none)."""
    entry = record.idempotency
    if entry is None:
        return None
    return {
        "api_key_id": entry.api_key_id,
        "key": entry.key,
        "request_hash": entry.request_hash,
        "decision_id": record.decision.decision_id,
        "created_at": now,
    }


def audit_entry(event_type: str, about: Any, payload: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """An audit entry (the keyword arguments of `AuditAppender.append`) about a decision: the actor_id,
    capability and session_id of `about` (a `NewDecision`, or a `decisions` row), the payload, and
    `fields` (decision_id, outcome, audit_ref)."""
    return {
        "event_type": event_type,
        "actor_id": about.actor_id,
        "capability": about.capability,
        "session_id": about.session_id,
        "payload": payload,
        **fields,
    }


def decision_audit_entries(record: NewDecision, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The "proposal" and "decision" audit entries of a new decision whose row is `row`, then the
    "confirmation" of its parent when it consumes a token."""
    decision = record.decision
    review_deadline = row["review_deadline"]
    entries = [
        audit_entry("proposal", record, dict(record.proposal_audit), decision_id=decision.decision_id),
        audit_entry(
            "decision",
            record,
            {
                "outcome": decision.outcome,
                "reason": decision.reason,
                "risk_score": decision.risk_score,
                "constraints": decision.constraints,
                "policy_ids": list(decision.policy_ids),
                "actor_type": record.actor_type,
                "params_hash": record.params_hash,
                "parent_decision_id": decision.parent_decision_id,
                "expires_at": row["expires_at"],
                "review_deadline": format_timestamp(review_deadline) if review_deadline else None,
                "confirmation_token_issued": decision.confirmation_token is not None,
                "idempotency_key": record.idempotency is not None,
                "api_key_id": record.api_key_id,
                "policy_version": decision.policy_version,
                **({"shadow": row["shadow"]} if row["shadow"] else {}),
            },
            decision_id=decision.decision_id,
            audit_ref=row["audit_ref"],
            outcome=decision.outcome,
        ),
    ]
    if record.consumes_token_of is not None:
        entries.append(
            audit_entry(
                "confirmation",
                record,
                {"token_consumed_by": decision.decision_id, "api_key_id": record.api_key_id},
                decision_id=record.consumes_token_of,
            )
        )
    return entries


class _RowView:
    """Attribute access to a row dict, so `decision_from_row` builds a decision from what was inserted."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


def decision_from_row(row: Any) -> Decision:
    """A `Decision` from a `decisions` row (or a view of the values just inserted)."""
    review: Review | None = None
    if row.review_status is not None:
        review = Review(
            status=row.review_status,
            reviewer=row.reviewer,
            note=row.review_note,
            resolved_at=row.review_resolved_at,
        )
    return Decision(
        decision_id=row.decision_id,
        outcome=row.outcome,
        reason=row.reason,
        risk_score=row.risk_score,
        constraints=dict(row.constraints),
        timestamp=row.timestamp,
        audit_ref=row.audit_ref,
        policy_ids=list(row.policy_ids),
        confirmation_token=row.confirmation_token,
        expires_at=row.expires_at,
        review=review,
        parent_decision_id=row.parent_decision_id,
        policy_version=row.policy_version,
        shadow=[ShadowOutcome(**entry) for entry in row.shadow or ()],
    )


def as_stored(record: NewDecision, row: Mapping[str, Any]) -> Decision:
    """The decision as its new row holds it: the one given when the row changed nothing in it (the
    service's decisions arrive complete: audit_ref made, constraints canonical), else rebuilt from the row."""
    decision = record.decision
    review_as_stored = None if row["review_status"] is None else Review(status=row["review_status"])
    if (
        decision.audit_ref == row["audit_ref"]
        and decision.expires_at == row["expires_at"]
        and decision.review == review_as_stored
        and _same_json(decision.constraints, row["constraints"])
    ):
        return decision
    return decision_from_row(_RowView(row))


def _same_json(first: Any, second: Any) -> bool:
    """True when both are the same JSON, spelling included (1 and 1.0, or true and 1, differ)."""
    try:
        return bool(
            orjson.dumps(first, option=orjson.OPT_SORT_KEYS) == orjson.dumps(second, option=orjson.OPT_SORT_KEYS)
        )
    except orjson.JSONEncodeError:
        return False


def binding_from_row(row: Any) -> DecisionBinding:
    """What a confirmation token of the decision in `row` is checked against."""
    return DecisionBinding(
        decision_id=row.decision_id,
        actor_id=row.actor_id,
        actor_type=row.actor_type,
        capability=row.capability,
        params_hash=row.params_hash,
        outcome=row.outcome,
        session_id=row.session_id,
        review_status=row.review_status,
        token_used=row.token_used_at is not None,
        token_used_by=row.token_used_by,
        token_expires_at=row.token_expires_at,
        api_key_id=row.api_key_id,
    )


# -- audit records and API keys -------------------------------------------------------------------


def audit_from_row(row: Any) -> AuditRecord:
    """An `AuditRecord` from an `audit_records` row (a row read back, or one just built to insert)."""
    mapping: Mapping[str, Any] = row if isinstance(row, Mapping) else row._mapping
    payload = mapping["payload"]
    return AuditRecord(
        audit_ref=mapping["audit_ref"],
        sequence=mapping["sequence"],
        event_type=mapping["event_type"],
        decision_id=mapping["decision_id"],
        actor_id=mapping["actor_id"],
        capability=mapping["capability"],
        outcome=mapping["outcome"],
        session_id=mapping["session_id"],
        timestamp=mapping["timestamp"],
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload),
        previous_hash=mapping["previous_hash"],
        hash=mapping["hash"],
    )


def api_key_from_row(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        actors=_stored_actor_patterns(row.key_id, row.actors),
        rate_limit_per_minute=row.rate_limit_per_minute,
    )


def _stored_actor_patterns(key_id: str, stored: Any) -> tuple[str, ...] | None:
    """A key's actor patterns as stored, checked as the CLI and the API check them. A value they could not
    have written (a string instead of a list, a pattern that does not parse: a row edited by hand) binds
    the key to no actor — its proposals are refused — and says so in the log."""
    if stored is None:
        return None
    if isinstance(stored, list) and all(isinstance(pattern, str) for pattern in stored):
        try:
            return tuple(parse_actor_patterns(stored))
        except ValueError as exc:
            problem = str(exc)
    else:
        problem = f"a JSON {type(stored).__name__} where a list of patterns belongs"
    logger.error(
        "API key %s: its stored actor patterns are malformed (%s); it is bound to no actor until "
        "`aegis-server keys update %s --actors ...` rewrites them",
        key_id,
        problem,
        key_id,
    )
    return None
