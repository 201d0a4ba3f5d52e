"""The audit hash chain: how a record's hash is computed and how a sequence of records is checked.

`hash = sha256(previous_hash + canonical_json(every field of the record except hash))`, where the fields
are `audit_ref, sequence, event_type, decision_id, actor_id, capability, outcome, session_id, timestamp,
payload, previous_hash` and the first record's `previous_hash` is 64 zeros. Sequences run 1, 2, 3, ...
without gaps, so a deleted record shows as a gap and an edited one as a hash mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from aegis_sdk.models import AuditVerification, BrokenLink
from aegis_server.canonical import CanonicalJSON, canonical_json, canonical_json_with

__all__ = ["CHAINED_FIELDS", "GENESIS_HASH", "ChainChecker", "link_hash"]

GENESIS_HASH = "0" * 64

CHAINED_FIELDS: tuple[str, ...] = (
    "audit_ref",
    "sequence",
    "event_type",
    "decision_id",
    "actor_id",
    "capability",
    "outcome",
    "session_id",
    "timestamp",
    "payload",
    "previous_hash",
)
_FIELDS_BUT_PAYLOAD = tuple(name for name in CHAINED_FIELDS if name != "payload")


def link_hash(fields: Mapping[str, Any]) -> str:
    """The hash of one audit record from its chained fields (extra keys such as `hash` are ignored).
    A payload given as `CanonicalJSON` text is embedded as it is (the same bytes as its value's)."""
    payload = fields.get("payload")
    digest = hashlib.sha256(str(fields["previous_hash"]).encode("utf-8"))
    if isinstance(payload, CanonicalJSON):
        digest.update(canonical_json_with({name: fields.get(name) for name in _FIELDS_BUT_PAYLOAD}, "payload", payload))
    else:
        digest.update(canonical_json({name: fields.get(name) for name in CHAINED_FIELDS}))
    return digest.hexdigest()


class ChainChecker:
    """Feed records in sequence order; stops at the first broken one. Constant memory."""

    def __init__(self) -> None:
        self.records_checked = 0
        self.head_hash: str | None = None
        self.first_broken: BrokenLink | None = None
        self._expected_sequence = 1
        self._previous_hash = GENESIS_HASH

    @property
    def broken(self) -> bool:
        return self.first_broken is not None

    def check(self, fields: Mapping[str, Any], payload_error: str | None = None) -> bool:
        """Check the next record; returns False (and records why) when it breaks the chain."""
        if self.first_broken is not None:
            return False
        self.records_checked += 1
        sequence = int(fields["sequence"])
        audit_ref = str(fields["audit_ref"])
        reason: str | None = None
        if sequence != self._expected_sequence:
            reason = f"sequence gap: expected sequence {self._expected_sequence}, found {sequence}"
        elif fields["previous_hash"] != self._previous_hash:
            reason = "previous_hash mismatch: the record does not link to the hash of the record before it"
        elif payload_error is not None:
            reason = f"hash mismatch: the payload is not readable JSON ({payload_error})"
        else:
            try:
                computed = link_hash(fields)
            except (TypeError, ValueError) as exc:
                reason = f"hash mismatch: the record cannot be canonicalised ({exc})"
            else:
                if computed != fields["hash"]:
                    reason = "hash mismatch: the record's contents do not match its stored hash"
        if reason is not None:
            self.first_broken = BrokenLink(sequence=sequence, audit_ref=audit_ref, reason=reason)
            return False
        self._expected_sequence = sequence + 1
        self._previous_hash = str(fields["hash"])
        self.head_hash = self._previous_hash
        return True

    def result(self) -> AuditVerification:
        return AuditVerification(
            valid=self.first_broken is None,
            records_checked=self.records_checked,
            head_hash=self.head_hash,
            first_broken=self.first_broken,
        )
