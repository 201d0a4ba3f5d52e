"""Which outcome answers a proposal: the scripts of `FakePlatform.script` / `script_sequence`."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from aegis_sdk.models import Proposal
from aegis_sdk.testing._state import FakeState
from aegis_sdk.testing._types import OutcomeSpec, Responder, ScriptedOutcome

__all__ = ["Rule", "add_rule", "add_sequence", "resolve"]


@dataclasses.dataclass
class Rule:
    """One script: a capability glob and its answer (or a sequence of answers, used up in order)."""

    pattern: str
    order: int
    answer: OutcomeSpec | Responder | None
    defaults: dict[str, Any]
    sequence: deque[OutcomeSpec] | None = None

    def specificity(self) -> tuple[bool, int, int]:
        literal = sum(1 for char in self.pattern if char not in "*?[]")
        return (not any(char in self.pattern for char in "*?["), literal, self.order)


def add_rule(state: FakeState, pattern: str, answer: OutcomeSpec | Responder, defaults: dict[str, Any]) -> None:
    with state.lock:
        state.rules.append(Rule(pattern, state.next_number(), answer, defaults))


def add_sequence(state: FakeState, pattern: str, outcomes: Iterable[OutcomeSpec]) -> None:
    with state.lock:
        state.rules.append(Rule(pattern, state.next_number(), None, {}, deque(outcomes)))


def resolve(state: FakeState, proposal: Proposal) -> tuple[ScriptedOutcome, str]:
    """The scripted answer to `proposal` and where it came from (the winning pattern, or "default")."""
    capability = proposal.action.capability
    matching = [
        rule
        for rule in state.rules
        if fnmatch.fnmatchcase(capability, rule.pattern) and (rule.sequence is None or rule.sequence)
    ]
    if not matching:
        return ScriptedOutcome(state.default_outcome), "default"
    rule = max(matching, key=Rule.specificity)
    if rule.sequence is not None:
        return _as_outcome(rule.sequence.popleft(), {}), rule.pattern
    answer = rule.answer
    if callable(answer):
        answer = answer(proposal)
    if answer is None:
        raise TypeError(f"the script for {rule.pattern!r} returned None; return an outcome such as 'ALLOW'")
    return _as_outcome(answer, rule.defaults), rule.pattern


def _as_outcome(answer: OutcomeSpec, defaults: Mapping[str, Any]) -> ScriptedOutcome:
    if isinstance(answer, ScriptedOutcome):
        return answer
    return ScriptedOutcome(answer, **defaults)
