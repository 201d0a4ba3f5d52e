"""Identifiers: a prefix (`dec_`, `aud_`) and 32 hex digits, ordered by creation time.

The first 12 digits are the milliseconds since the Unix epoch and the last 20 are random (80 bits, from
the operating system's CSPRNG), as in a UUIDv7. Ids made later sort later, so the database's unique
indexes on them grow at their right edge: a batch of decisions touches a few index pages, not one
random page per id, which keeps SQLite's write-ahead log small and commits short. The random part keeps
ids unguessable; nothing should read the time out of an id (the records carry their timestamps).
"""

from __future__ import annotations

import os
import time

__all__ = ["new_audit_ref", "new_id", "new_request_id"]


def new_id(prefix: str) -> str:
    """`prefix` + 12 hex digits of the current time in milliseconds + 20 random hex digits."""
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_audit_ref() -> str:
    """The id of an audit record (`aud_...`)."""
    return new_id("aud_")


def new_request_id() -> str:
    """The id of a request that brought none (`req_...`; a third of the time of a uuid4's hex)."""
    return new_id("req_")
