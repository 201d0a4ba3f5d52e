"""Confirmation tokens: HMAC-SHA256 over the parent decision id, the actor id, the capability, the
canonical hash of the parameters and the expiry.

A token reads `ct1.<decision_id>.<expiry unix seconds>.<mac base64url>`. Only the decision id and the
expiry travel in clear; the actor, capability and parameters hash are taken from the stored decision
when the token is verified, so a token proves that *this server* issued it for *that* decision, and the
service then compares the stored binding with the proposal that presents it. Single use is enforced by
the store (the token is consumed in the same transaction as the ALLOW it produces).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone

_PREFIX = "ct1"
_MAX_TOKEN_LENGTH = 2048


@dataclass(frozen=True)
class TokenClaims:
    """What a token carries in clear. `mac` is checked with `TokenSigner.verify`."""

    decision_id: str
    expires_at: datetime
    mac: bytes


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


class TokenSigner:
    """Issues and verifies confirmation tokens with one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the confirmation-token secret must be at least 16 bytes; set a longer AEGIS_SECRET")
        self._secret = secret

    def _mac(self, decision_id: str, actor_id: str, capability: str, params_hash: str, expiry: int) -> bytes:
        message = b"aegis-confirmation-v1" + b"".join(
            _field(part) for part in (decision_id, actor_id, capability, params_hash, str(expiry))
        )
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def issue(self, *, decision_id: str, actor_id: str, capability: str, params_hash: str, expires_at: datetime) -> str:
        expiry = int(expires_at.timestamp())
        mac = self._mac(decision_id, actor_id, capability, params_hash, expiry)
        encoded = base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
        return f"{_PREFIX}.{decision_id}.{expiry}.{encoded}"

    @staticmethod
    def parse(token: str) -> TokenClaims | None:
        """The clear part of a token, or None when it is not one of ours at all."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _PREFIX or not parts[1]:
            return None
        _, decision_id, expiry_text, encoded = parts
        if not expiry_text.isdigit() or len(expiry_text) > 12:
            return None
        try:
            mac = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (ValueError, TypeError):
            return None
        if len(mac) != hashlib.sha256().digest_size:
            return None
        try:
            expires_at = datetime.fromtimestamp(int(expiry_text), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):  # beyond the years a datetime can hold: not ours
            return None
        return TokenClaims(decision_id=decision_id, expires_at=expires_at, mac=mac)

    def verify(self, claims: TokenClaims, *, actor_id: str, capability: str, params_hash: str) -> bool:
        """True when the token was issued by this secret for this binding (constant-time compare)."""
        expected = self._mac(claims.decision_id, actor_id, capability, params_hash, int(claims.expires_at.timestamp()))
        return hmac.compare_digest(expected, claims.mac)


__all__ = ["TokenClaims", "TokenSigner"]
