"""What a governed call leaves behind for the next call, in process memory, bounded:

- the escalation a call left pending (its wait timed out), so that the same call again — same actor,
  capability, canonical arguments and session — re-attaches to that decision instead of escalating again;
- the questions asked through `InputRequiredResult` (MCP 2026-07-28), each waiting for the client's retry.
  The retry echoes an opaque `requestState`: a random, single-use id that names the question, bound to the
  exact call it was asked about (so an answer cannot be carried over to another call or other arguments).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from aegis_mcp._call import ToolCall
from aegis_sdk import Decision
from aegis_sdk._wire.canonical import canonical_hash

_SIZE = 1024
STATE_PREFIX = "aegis-confirm."
RUN_PREFIX = "aegis-run."


def fingerprint(call: ToolCall) -> str | None:
    """The identity of a call: actor, capability, tool, session and the canonical hash of its arguments."""
    try:
        arguments = canonical_hash(call.arguments)
    except (TypeError, ValueError):
        return None
    return canonical_hash([call.actor.id, call.actor.type, call.capability, call.tool, call.session_id, arguments])


class _Bounded:
    """A thread-safe LRU of at most `size` entries."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key: str) -> object | None:
        with self._lock:
            return self._items.get(key)

    def pop(self, key: str) -> object | None:
        with self._lock:
            return self._items.pop(key, None)

    def discard_if(self, key: str, value: object) -> None:
        with self._lock:
            if self._items.get(key) == value:
                del self._items[key]


class PendingEscalations:
    """Call → the id of the escalation it left pending."""

    def __init__(self, size: int = _SIZE) -> None:
        self._items = _Bounded(size)

    def find(self, call: ToolCall) -> str | None:
        key = fingerprint(call)
        found = self._items.get(key) if key is not None else None
        return found if isinstance(found, str) else None

    def remember(self, call: ToolCall, decision_id: str) -> bool:
        """Remember the call's escalation; False when nothing ties a later call to this client (no session)."""
        key = fingerprint(call)
        if key is None or call.session_id is None:
            return False
        self._items.put(key, decision_id)
        return True

    def forget(self, call: ToolCall, decision_id: str) -> None:
        """Forget the call's pending decision if it is still `decision_id` (a newer one is kept)."""
        key = fingerprint(call)
        if key is not None:
            self._items.discard_if(key, decision_id)


@dataclass(frozen=True)
class Question:
    """A confirmation asked through `InputRequiredResult`, waiting for the client's retry."""

    call_fingerprint: str
    decision: Decision
    expires_at: float


class PendingQuestions:
    """requestState → the question it answers. Each state is taken once."""

    def __init__(self, ttl: float, size: int = _SIZE) -> None:
        self._ttl = ttl
        self._items = _Bounded(size)

    def ask(self, call: ToolCall, decision: Decision) -> str | None:
        """Record a question about `call`; returns the requestState to send, or None when the call has no
        fingerprint (its arguments cannot be hashed canonically)."""
        key = fingerprint(call)
        if key is None:
            return None
        state = STATE_PREFIX + secrets.token_urlsafe(24)
        self._items.put(state, Question(key, decision, time.monotonic() + self._ttl))
        return state

    def take(self, state: str, call: ToolCall) -> Question | None:
        """The question `state` names, if it is about this very call and has not expired; the state is spent
        either way."""
        question = self._items.pop(state)
        if not isinstance(question, Question):
            return None
        if question.expires_at < time.monotonic() or question.call_fingerprint != fingerprint(call):
            return None
        return question


@dataclass(frozen=True)
class Run:
    """An allowed call whose tool asked its own question (`InputRequiredResult`): the ALLOW it runs under and
    the tool's own `requestState`, kept here so that the client's retry resumes the tool under that same
    decision instead of proposing again (and asking AEGIS's question again)."""

    call_fingerprint: str
    decision: Decision
    tool_state: str | None
    expires_at: float


class PendingRuns:
    """requestState → the allowed run it resumes. Each state is taken once; a tool that asks again gets a new
    one."""

    def __init__(self, ttl: float, size: int = _SIZE) -> None:
        self._ttl = ttl
        self._items = _Bounded(size)

    def suspend(self, call: ToolCall, decision: Decision, tool_state: str | None) -> str | None:
        key = fingerprint(call)
        if key is None:
            return None
        state = RUN_PREFIX + secrets.token_urlsafe(24)
        self._items.put(state, Run(key, decision, tool_state, time.monotonic() + self._ttl))
        return state

    def take(self, state: str, call: ToolCall) -> Run | None:
        """The run `state` resumes, if it is this very call and has not expired; spent either way."""
        run = self._items.pop(state)
        if not isinstance(run, Run):
            return None
        if run.expires_at < time.monotonic() or run.call_fingerprint != fingerprint(call):
            return None
        return run


def is_our_state(state: object) -> bool:
    """AEGIS's own question round (`aegis-confirm.`)."""
    return isinstance(state, str) and state.startswith(STATE_PREFIX)


def is_our_run(state: object) -> bool:
    """A tool's own question round, resumed under AEGIS's ALLOW (`aegis-run.`)."""
    return isinstance(state, str) and state.startswith(RUN_PREFIX)


__all__ = [
    "RUN_PREFIX",
    "STATE_PREFIX",
    "PendingEscalations",
    "PendingQuestions",
    "PendingRuns",
    "Question",
    "Run",
    "fingerprint",
    "is_our_run",
    "is_our_state",
]
