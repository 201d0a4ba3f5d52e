"""What every governance use case shares: the settings, the store, the metrics, the clock, the long-poll
notifier, the policy set, the token signer and value key (once `init_tokens` has run), and the one
helper that audits and counts a refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aegis_server.engine import EngineConfig, value_key_from_secret
from aegis_server.governance.errors import Unavailable
from aegis_server.metrics import Metrics
from aegis_server.policies.manager import PolicyManager
from aegis_server.settings import Settings
from aegis_server.store import Store
from aegis_server.tokens import TokenSigner

__all__ = ["Clock", "GovernanceRuntime", "ReviewNotifier", "iso", "parse_time", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """A moment as the wire shows it: UTC, ISO 8601 with `Z`."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """The moment of an ISO 8601 text (naive means UTC); None for none or for text that is not one."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class ReviewNotifier:
    """In-process wake-ups for long polls: the review and expiry paths of this process notify waiters.
    Waiters also re-check the store periodically, so a review on another replica is seen too."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, decision_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(decision_id, set()).add(event)
        return event

    def unsubscribe(self, decision_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(decision_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[decision_id]

    def notify(self, decision_id: str) -> None:
        for event in self._waiters.get(decision_id, ()):
            event.set()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())


def _starting() -> Unavailable:
    return Unavailable("The server is starting; retry shortly.")


@dataclass
class GovernanceRuntime:
    """The shared state of the use cases. `signer` and `value_key` exist once `init_tokens` has run;
    before that they refuse with `Unavailable` (503)."""

    settings: Settings
    store: Store
    metrics: Metrics
    clock: Clock
    policies: PolicyManager
    engine_config: EngineConfig
    notifier: ReviewNotifier = field(default_factory=ReviewNotifier)
    _signer: TokenSigner | None = None
    _value_key: bytes | None = None

    async def init_tokens(self) -> None:
        """The token secret: `settings.secret`, else the one kept in the store (made on first start)."""
        secret = self.settings.token_secret()
        if secret is None:
            secret = await self.store.get_or_create_secret()
        self._signer = TokenSigner(secret)
        # Sensitive values, params_hash and the idempotency request_hash are keyed (HMAC) with a key
        # derived from the secret: a bare SHA-256 of a small value (a card number) is reversed by guessing.
        self._value_key = value_key_from_secret(secret)
        self.engine_config = dataclasses.replace(self.engine_config, value_key=self._value_key)

    @property
    def signer(self) -> TokenSigner:
        if self._signer is None:
            raise _starting()
        return self._signer

    @property
    def value_key(self) -> bytes:
        if self._value_key is None:
            raise _starting()
        return self._value_key

    async def audit_refusal(self, event_type: str, code: str, *, payload: dict[str, Any], **fields: Any) -> None:
        """Write the audit record of a refusal (`payload` gains the `code`) and count it; a refusal that
        cannot be audited is not answered (the store's error propagates, counted as an audit failure)."""
        try:
            await self.store.append_audit(event_type, payload={"code": code, **payload}, **fields)
        except Exception:
            self.metrics.audit_failures.inc()
            raise
        self.metrics.rejected.labels(code=code).inc()
