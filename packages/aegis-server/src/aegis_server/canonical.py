"""Canonical JSON for the server: the audit hash chain, token binding and idempotency hashes.

The one implementation lives in the SDK (`aegis_sdk._wire.canonical`, rules in its docstring) so that the
fake platform of `aegis_sdk.testing` hashes exactly as the server does; the server's modules import it
from here, under the server's name.
"""

from __future__ import annotations

from aegis_sdk._wire.canonical import (
    CanonicalJSON,
    canonical_hash,
    canonical_json,
    canonical_json_with,
    canonical_text,
    normalise_json,
)

__all__ = [
    "CanonicalJSON",
    "canonical_hash",
    "canonical_json",
    "canonical_json_with",
    "canonical_text",
    "normalise_json",
]
