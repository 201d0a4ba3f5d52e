"""The fake platform's memory: configuration, clock, ids, keys and every collection, behind one lock.

`FakeState` holds data only; the rooms that act on it are `_scripts` (which outcome answers a proposal),
`_decisions` (propose, confirm, review, list, executions), `_audit` (the hash chain and its queries),
`_registry` (capabilities and policies) and `_failures` (injected errors). Each takes the lock.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter

from aegis_sdk._wire.envelope import not_found
from aegis_sdk.models import AuditRecord, Capability, Decision, ExecutionReport, Outcome, Policy, Proposal
from aegis_sdk.testing._types import AutoReview, RecordedRequest, ScriptedOutcome

if TYPE_CHECKING:
    from aegis_sdk.testing._failures import Failure
    from aegis_sdk.testing._scripts import Rule

__all__ = ["ApiKey", "DecisionEntry", "FakeState", "Token", "decision_json", "rfc3339"]

_T = TypeVar("_T")

_DECISION_ADAPTER: TypeAdapter[Decision] = TypeAdapter(Decision)


def rfc3339(moment: datetime) -> str:
    """`moment` as the contract writes times: UTC with a `Z`."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def decision_json(decision: Decision) -> dict[str, Any]:
    """The JSON body of a decision."""
    data: dict[str, Any] = _DECISION_ADAPTER.dump_python(decision, mode="json")
    return data


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """A key the fake accepts: its name (the reviewer it records) and scopes (None: all)."""

    name: str
    scopes: frozenset[str] | None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes or "admin" in self.scopes


@dataclasses.dataclass
class Token:
    """A confirmation token: the decision it confirms and the proposal it is bound to."""

    decision_id: str
    actor_id: str
    actor_type: str
    capability: str
    params_hash: str
    expires_at: datetime
    used: bool = False


@dataclasses.dataclass
class DecisionEntry:
    """A decision with the proposal it answered, in its current state."""

    seq: int
    decision: Decision
    proposal: Proposal
    created_at: datetime
    review_deadline: datetime | None = None
    auto_review: AutoReview | None = None


class FakeState:
    """Everything the fake knows. `reset()` returns it to what the constructor was given."""

    def __init__(
        self,
        *,
        default_outcome: Outcome,
        strict_capabilities: bool,
        capabilities: Iterable[Capability],
        policies: Iterable[Policy],
        clock: Callable[[], datetime] | None,
        confirmation_ttl_seconds: int,
        review_timeout_seconds: int,
        api_key: str | None,
        key_name: str,
        scopes: Iterable[str] | None,
    ) -> None:
        ScriptedOutcome(default_outcome)  # validates the name
        self.lock = threading.RLock()
        self.default_outcome: Outcome = default_outcome
        self.strict_capabilities = strict_capabilities
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.confirmation_ttl = timedelta(seconds=confirmation_ttl_seconds)
        self.review_timeout_seconds = review_timeout_seconds
        self.api_key = api_key
        self.default_key = ApiKey(key_name, None if scopes is None else frozenset(scopes))
        self._initial_capabilities = {c.name: c for c in capabilities}
        self._initial_policies = {p.name: p for p in policies}
        self.reset()

    @property
    def key_name(self) -> str:
        return self.default_key.name

    def reset(self) -> None:
        with self.lock:
            self.offset = timedelta()
            self.rules: list[Rule] = []
            self.failures: list[Failure] = []
            self.entries: dict[str, DecisionEntry] = {}
            self.tokens: dict[str, Token] = {}
            self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}
            self.proposals: list[Proposal] = []
            self.executions: dict[str, ExecutionReport] = {}
            self.requests: list[RecordedRequest] = []
            self.audit: list[AuditRecord] = []
            self.keys: dict[str, ApiKey] = {}
            self.capabilities: dict[str, Capability] = dict(self._initial_capabilities)
            self.policies: dict[str, Policy] = dict(self._initial_policies)
            self.counter = 0

    def now(self) -> datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment + self.offset

    def next_number(self) -> int:
        self.counter += 1
        return self.counter

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.next_number():06d}{secrets.token_hex(4)}"

    def add_key(self, name: str, scopes: Iterable[str] | None) -> str:
        """Accept one more API key (named `name`, with `scopes`); returns the key."""
        key = "aegis_sk_fake_" + secrets.token_hex(12)
        with self.lock:
            self.keys[key] = ApiKey(name, None if scopes is None else frozenset(scopes))
        return key

    def lookup(self, table: Mapping[str, _T], what: str, name: str) -> _T:
        """`table[name]`, or 404 `not_found` naming the missing `what` ("decision", "policy"...)."""
        with self.lock:
            found = table.get(name)
        if found is None:
            raise not_found(what, name)
        return found

    def key_for(self, presented: str) -> ApiKey | None:
        """The key a bearer token names, or None when the fake does not accept it."""
        with self.lock:
            added = self.keys.get(presented)
        if added is not None:
            return added
        if self.api_key is None or secrets.compare_digest(presented.encode(), self.api_key.encode()):
            return self.default_key
        return None
