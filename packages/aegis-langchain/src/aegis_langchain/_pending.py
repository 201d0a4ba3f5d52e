"""The escalations governed calls left pending (a wait that timed out, `on_escalate="raise"`, a pause the
user rejected or resumed before the operator's review), per client, so that the model's retry of the same
call — same actor, capability, canonical parameters and session — re-attaches to that decision instead of
escalating again. Process memory: another process or another client proposes anew."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from aegis_sdk._wire.canonical import canonical_hash

if TYPE_CHECKING:
    from aegis_langchain._call import GovernedCall

_SIZE = 1024
_Key = tuple[str, str, str, str | None, str]


def _key(call: GovernedCall) -> _Key | None:
    try:
        parameters = canonical_hash(call.parameters)
    except (TypeError, ValueError):
        return None
    return (call.actor.id, call.actor.type, call.capability, call.session_id, parameters)


class PendingEscalations:
    """Bounded LRU of call → pending decision id for one client, and of the ALLOW decisions its tools ran.
    Thread-safe."""

    def __init__(self, size: int = _SIZE) -> None:
        self._size = size
        self._items: OrderedDict[_Key, str] = OrderedDict()
        self._ran: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim_run(self, decision_id: str) -> bool:
        """Claim the one run an ALLOW decision pays for; False when a tool already ran under it here. A
        LangGraph re-run meets the same decision again through its Idempotency-Key: a resume from an older
        checkpoint, or a ToolNode re-running every call of its step after another call paused."""
        with self._lock:
            if decision_id in self._ran:
                return False
            self._ran[decision_id] = None
            while len(self._ran) > self._size:
                self._ran.popitem(last=False)
            return True

    def find(self, call: GovernedCall) -> str | None:
        """The decision the same call left pending, if any."""
        key = _key(call)
        if key is None:
            return None
        with self._lock:
            return self._items.get(key)

    def remember(self, call: GovernedCall, decision_id: str) -> None:
        key = _key(call)
        if key is None:
            return
        with self._lock:
            self._items[key] = decision_id
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def forget(self, call: GovernedCall, decision_id: str) -> None:
        """Forget the call's pending decision if it is still `decision_id` (a newer one is kept)."""
        key = _key(call)
        if key is None:
            return
        with self._lock:
            if self._items.get(key) == decision_id:
                del self._items[key]


_stores: weakref.WeakKeyDictionary[object, PendingEscalations] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def pending_escalations(client: object) -> PendingEscalations:
    """The pending escalations of this client (the key that proposed is the one that may resubmit them)."""
    with _stores_lock:
        store = _stores.get(client)
        if store is None:
            store = _stores[client] = PendingEscalations()
        return store


__all__ = ["PendingEscalations", "pending_escalations"]
