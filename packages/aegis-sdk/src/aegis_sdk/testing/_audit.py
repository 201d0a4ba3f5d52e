"""The fake's audit log: a SHA-256 hash chain over canonical JSON, its queries and its verification.

Each record's `hash` is SHA-256 of the previous record's hash followed by the canonical JSON
(`aegis_sdk._wire.canonical`, the server's) of the record's other fields. The server keys its chain with
a secret; the fake's needs none, so anyone can recompute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aegis_sdk._wire.canonical import canonical_hash, canonical_json
from aegis_sdk._wire.cursors import decode_cursor, encode_cursor
from aegis_sdk._wire.listing import ListingFilters
from aegis_sdk.models import AuditRecord, AuditVerification, BrokenLink, Proposal
from aegis_sdk.testing import _schema
from aegis_sdk.testing._state import FakeState, rfc3339

__all__ = [
    "GENESIS_HASH",
    "append_audit",
    "audit_log",
    "audit_parameters",
    "audit_rejection",
    "audit_trail",
    "verify",
]

GENESIS_HASH = "0" * 64
_CURSOR_KIND, _CURSOR_ORDER = "audit", "asc"


def _link_hash(previous: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(previous.encode("ascii") + canonical_json(dict(fields))).hexdigest()


def append_audit(
    state: FakeState,
    event_type: str,
    *,
    decision_id: str | None = None,
    proposal: Proposal | None = None,
    outcome: str | None = None,
    payload: dict[str, Any] | None = None,
) -> AuditRecord:
    """Chain one record to the log (the caller holds the lock)."""
    previous = state.audit[-1].hash if state.audit else GENESIS_HASH
    fields: dict[str, Any] = {
        "audit_ref": state.new_id("aud"),
        "sequence": len(state.audit) + 1,
        "event_type": event_type,
        "decision_id": decision_id,
        "actor_id": proposal.actor.id if proposal else None,
        "capability": proposal.action.capability if proposal else None,
        "outcome": outcome,
        "session_id": proposal.context.session_id if proposal else None,
        "timestamp": rfc3339(state.now()),
        "payload": payload or {},
        "previous_hash": previous,
    }
    record = AuditRecord(**fields, hash=_link_hash(previous, fields))
    state.audit.append(record)
    return record


def audit_rejection(state: FakeState, proposal: Proposal, code: str, payload: dict[str, Any]) -> None:
    """Record a refused proposal or confirmation (unknown capability, bad parameters, rejected token)."""
    append_audit(
        state,
        "confirmation_rejected" if proposal.confirmation_token else "proposal_rejected",
        decision_id=payload.get("parent_decision_id"),
        proposal=proposal,
        payload={"code": code, "params_hash": canonical_hash(proposal.action.parameters), **payload},
    )


def audit_parameters(state: FakeState, proposal: Proposal) -> dict[str, Any]:
    """The parameters as the audit keeps them: the capability's `x-sensitive` ones hashed."""
    parameters = dict(proposal.action.parameters)
    capability = state.capabilities.get(proposal.action.capability)
    if capability is not None:
        for name in _schema.sensitive_fields(capability.parameter_schema):
            if name in parameters:
                parameters[name] = "sha256:" + canonical_hash(parameters[name])
    return parameters


def verify(state: FakeState) -> AuditVerification:
    """Walk the chain from the genesis hash; the first record that does not link is reported."""
    with state.lock:
        previous = GENESIS_HASH
        for index, record in enumerate(state.audit, start=1):
            problem = None
            if record.sequence != index:
                problem = f"sequence {record.sequence} where {index} was expected"
            elif record.previous_hash != previous:
                problem = "previous_hash does not match the hash of the record before"
            elif record.hash != _link_hash(previous, record.model_dump(mode="json", exclude={"hash"})):
                problem = "hash does not match the record's contents"
            if problem is not None:
                broken = BrokenLink(sequence=index, audit_ref=record.audit_ref, reason=problem)
                return AuditVerification(valid=False, records_checked=index, head_hash=None, first_broken=broken)
            previous = record.hash
        head = state.audit[-1].hash if state.audit else None
        return AuditVerification(valid=True, records_checked=len(state.audit), head_hash=head)


def audit_log(
    state: FakeState, filters: ListingFilters, limit: int, cursor: str | None
) -> tuple[list[AuditRecord], str | None]:
    """One page of the log in chain order, and the cursor of the next page (None on the last)."""
    after = None if cursor is None else decode_cursor(cursor, _CURSOR_KIND, _CURSOR_ORDER)
    with state.lock:
        found = [r for r in state.audit if _matches(r, filters) and (after is None or r.sequence > after)]
    page = found[:limit]
    more = len(found) > limit and page
    return page, (encode_cursor(_CURSOR_KIND, _CURSOR_ORDER, page[-1].sequence) if more else None)


def audit_trail(state: FakeState, decision_id: str) -> list[AuditRecord]:
    """Every record of one decision, in chain order (the caller checked that it exists)."""
    with state.lock:
        return [r for r in state.audit if r.decision_id == decision_id]


def _matches(record: AuditRecord, filters: ListingFilters) -> bool:
    checks = (
        (filters.actor_id, record.actor_id),
        (filters.capability, record.capability),
        (filters.outcome, record.outcome),
        (filters.session_id, record.session_id),
        (filters.event_type, record.event_type),
        (filters.decision_id, record.decision_id),
    )
    if any(wanted is not None and wanted != actual for wanted, actual in checks):
        return False
    return filters.in_window(datetime.fromisoformat(record.timestamp.replace("Z", "+00:00")))
