"""Anchoring the audit chain outside the database: signed checkpoints of its head.

The rooms:

- `signing_keys`: where the anchor lives (the checkpoint directory) and its keys — the Ed25519 signing key
  of checkpoints (never in the database) and the source of the chain's HMAC key.
- `checkpoints`: the signed checkpoint document, signing and verifying it, and the checkpoint files.
- `verification`: comparing the database with a checkpoint, and the whole check behind
  `aegis-server audit verify` and `GET /api/v1/audit/verify` (`verify_audit`).
- `anchor`: the server's `AuditAnchor` — the startup check, the background writer, the webhook and the
  last checkpoint at shutdown.

Import from those modules; this package exports nothing itself.
"""

from __future__ import annotations

__all__: list[str] = []
