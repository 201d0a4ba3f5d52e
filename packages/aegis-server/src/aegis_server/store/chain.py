"""The audit hash chain: how a record's hash is computed and how a sequence of records is checked.

Two link formulas, told apart by the record's position (the `audit_chain` row of `server_settings` names
the first version-2 record, and every signed checkpoint repeats it):

- version 1 (AEGIS 0.1): `hash = sha256(previous_hash + canonical_json(fields))`;
- version 2 (keyed): `hash = hmac_sha256(audit_key, previous_hash + canonical_json(fields))`, where the
  audit key never lives in the database (`AEGIS_AUDIT_KEY`, or a key file written once with mode 0600).

`fields` are `audit_ref, sequence, event_type, decision_id, actor_id, capability, outcome, session_id,
timestamp, payload, previous_hash`; the first record's `previous_hash` is 64 zeros. Sequences run 1, 2, 3,
... without gaps, so a deleted record shows as a gap and an edited one as a hash mismatch. `created_at` is
the column copy of the chained `timestamp` (both written from one clock reading); a version-2 record whose
`created_at` differs from its `timestamp` is reported as broken.

Without the audit key, anyone with write access to the database could recompute a version-1 chain after
editing it; with version 2 they cannot, and the signed checkpoints (`aegis_server.audit`) pin the
head so that a cut tail is found too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegis_sdk._wire.canonical import CanonicalJSON, canonical_json, canonical_json_with
from aegis_sdk.models import AuditVerification, BrokenLink

__all__ = [
    "CHAINED_FIELDS",
    "CHAIN_VERSION",
    "GENESIS_HASH",
    "MIN_AUDIT_KEY_LENGTH",
    "AuditKeyError",
    "AuditKeySource",
    "ChainChecker",
    "ChainLinker",
    "audit_key_id",
    "link_hash",
    "link_hmac",
    "read_or_create_key_file",
]

GENESIS_HASH = "0" * 64
CHAIN_VERSION = 2  # what this server writes
MIN_AUDIT_KEY_LENGTH = 32

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
_KEY_ID_MESSAGE = b"aegis audit key id"


def _linked_bytes(fields: Mapping[str, Any]) -> bytes:
    payload = fields.get("payload")
    if isinstance(payload, CanonicalJSON):
        return canonical_json_with({name: fields.get(name) for name in _FIELDS_BUT_PAYLOAD}, "payload", payload)
    return canonical_json({name: fields.get(name) for name in CHAINED_FIELDS})


def link_hash(fields: Mapping[str, Any]) -> str:
    """The version-1 (unkeyed SHA-256) hash of one audit record from its chained fields (extra keys such as
    `hash` are ignored). A payload given as `CanonicalJSON` text is embedded as it is."""
    digest = hashlib.sha256(str(fields["previous_hash"]).encode("utf-8"))
    digest.update(_linked_bytes(fields))
    return digest.hexdigest()


def link_hmac(fields: Mapping[str, Any], key: bytes) -> str:
    """The version-2 (HMAC-SHA256 under the audit key) hash of one audit record."""
    return ChainLinker(key).link(fields)


def audit_key_id(key: bytes) -> str:
    """A public fingerprint of an audit key (16 hex digits; it does not reveal the key): kept in the
    database and in checkpoints, so a replica or a verifier with a different key is told so."""
    return hmac.new(key, _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


class ChainLinker:
    """Version-2 links under one audit key. The HMAC state of the key is prepared once and copied for
    each record (`hmac.copy()`), so a link costs about what a plain SHA-256 does."""

    __slots__ = ("_base", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_AUDIT_KEY_LENGTH:
            raise AuditKeyError(f"the audit key must be at least {MIN_AUDIT_KEY_LENGTH} bytes long")
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self.key_id = audit_key_id(key)

    def link(self, fields: Mapping[str, Any]) -> str:
        digest = self._base.copy()
        digest.update(str(fields["previous_hash"]).encode("utf-8"))
        digest.update(_linked_bytes(fields))
        return digest.hexdigest()


class AuditKeyError(RuntimeError):
    """The audit key is missing, unreadable or too short. The message says how to fix it."""


def read_or_create_key_file(path: Path, make: Any, *, create: bool) -> bytes | None:
    """The bytes of the key file at `path`; when it does not exist and `create`, write `make()` there
    first (mode 0600, atomically: concurrent first starts agree on one key). None when absent and not
    `create`. `make` returns the file's bytes."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path.read_bytes()


class AuditKeySource:
    """Where the store finds the audit key: given (`AEGIS_AUDIT_KEY`), a key file (generated on first
    need), or, for an in-memory database, a random key that lives as long as the process."""

    def __init__(self, key: bytes | None = None, file: Path | None = None) -> None:
        if key is not None and len(key) < MIN_AUDIT_KEY_LENGTH:
            raise AuditKeyError(
                f"AEGIS_AUDIT_KEY is too short: use at least {MIN_AUDIT_KEY_LENGTH} characters, e.g. the output "
                'of `python -c "import secrets; print(secrets.token_hex(32))"`'
            )
        if key is None and file is None:
            key = secrets.token_bytes(32)
        self._key = key
        self.file = file

    @property
    def description(self) -> str:
        return "AEGIS_AUDIT_KEY" if self.file is None or self._key is not None else f"the key file {self.file}"

    def get(self, *, create: bool) -> bytes | None:
        """The key; from the file (made first when `create`); None when there is none and not `create`."""
        if self._key is not None:
            return self._key
        assert self.file is not None
        try:
            raw = read_or_create_key_file(
                self.file, lambda: secrets.token_hex(32).encode("ascii") + b"\n", create=create
            )
        except OSError as exc:
            raise AuditKeyError(
                f"cannot read or create the audit key file {self.file} ({exc.strerror or exc}); set "
                "AEGIS_AUDIT_KEY, or AEGIS_AUDIT_CHECKPOINT_DIR to a writable directory"
            ) from None
        if raw is None:
            return None
        try:
            key = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise AuditKeyError(
                f"the audit key file {self.file} is not 64 hex digits; restore it from your backup"
            ) from None
        if len(key) < MIN_AUDIT_KEY_LENGTH:
            raise AuditKeyError(f"the audit key file {self.file} holds a key shorter than 32 bytes")
        self._key = key
        return key


def _created_at_text(value: Any) -> str | None:
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, str):
        try:
            return _created_at_text(datetime.fromisoformat(value))
        except ValueError:
            return value
    return None


class ChainChecker:
    """Feed records in sequence order; stops at the first broken one. Constant memory.

    `v2_from` is the first keyed record (None: none is); `linker` checks keyed records (None: the audit
    key is not available, and a keyed record is reported as unverifiable)."""

    def __init__(self, *, v2_from: int | None = None, linker: ChainLinker | None = None) -> None:
        self.records_checked = 0
        self.head_hash: str | None = None
        self.head_sequence = 0
        self.first_broken: BrokenLink | None = None
        self.v2_from = v2_from
        self._linker = linker
        self._expected_sequence = 1
        self._previous_hash = GENESIS_HASH

    @property
    def broken(self) -> bool:
        return self.first_broken is not None

    def check(self, fields: Mapping[str, Any], payload_error: str | None = None) -> bool:
        """Check the next record; returns False (and records why) when it breaks the chain. A `created_at`
        in `fields` is compared with the chained timestamp of a keyed record."""
        if self.first_broken is not None:
            return False
        self.records_checked += 1
        sequence = int(fields["sequence"])
        audit_ref = str(fields["audit_ref"])
        keyed = self.v2_from is not None and sequence >= self.v2_from
        reason: str | None = None
        if sequence != self._expected_sequence:
            reason = f"sequence gap: expected sequence {self._expected_sequence}, found {sequence}"
        elif fields["previous_hash"] != self._previous_hash:
            reason = "previous_hash mismatch: the record does not link to the hash of the record before it"
        elif payload_error is not None:
            reason = f"hash mismatch: the payload is not readable JSON ({payload_error})"
        elif keyed and self._linker is None:
            reason = (
                f"unverifiable: records from #{self.v2_from} are keyed (HMAC) and the audit key is not "
                "available; set AEGIS_AUDIT_KEY (or AEGIS_AUDIT_CHECKPOINT_DIR, where the key file is) as "
                "the server has it"
            )
        else:
            try:
                computed = self._linker.link(fields) if keyed and self._linker is not None else link_hash(fields)
            except (TypeError, ValueError) as exc:
                reason = f"hash mismatch: the record cannot be canonicalised ({exc})"
            else:
                if not hmac.compare_digest(computed, str(fields["hash"])):
                    reason = (
                        "hash mismatch: the record's contents do not match its keyed hash (HMAC under the "
                        "audit key: edited, recomputed without the key, or checked with another audit key)"
                        if keyed
                        else "hash mismatch: the record's contents do not match its stored hash"
                    )
                elif keyed and "created_at" in fields and _created_at_text(fields["created_at"]) != fields["timestamp"]:
                    reason = "created_at mismatch: the row's created_at differs from its chained timestamp"
        if reason is not None:
            self.first_broken = BrokenLink(sequence=sequence, audit_ref=audit_ref, reason=reason)
            return False
        self._expected_sequence = sequence + 1
        self._previous_hash = str(fields["hash"])
        self.head_hash = self._previous_hash
        self.head_sequence = sequence
        return True

    def result(self) -> AuditVerification:
        return AuditVerification(
            valid=self.first_broken is None,
            records_checked=self.records_checked,
            head_hash=self.head_hash,
            first_broken=self.first_broken,
        )
