"""Re-deciding stored proposals under a candidate policy set, and tallying what changed. Pure: no I/O.

A stored proposal is re-decided with `engine.evaluate` at the time it was decided (for `time.*` conditions)
with the server's `EngineConfig`. It is *not replayable* when its audited parameters hold keyed hashes of
sensitive values and a candidate rule (enforced or shadow) for its capability reads such a value, a field
under it or a field above it (`action.parameters` whole reads them all): the hash would stand in for the
value and the outcome would be a guess. The redacted values are found by their form (`hmac-sha256:<hex>`)
rather than by the candidate's schema, so a field that the original schema marked and the candidate no
longer marks is still known to be a hash.

The candidate's parameter schema is a reader too: validated against a hash, a `minLength`, a `pattern`, an
`if` or a `type` would pass or fail on the hash, not on the value. A redacted proposal is replayable only
when the candidate schema for its capability is the one it was decided under (the value passed it then),
or when what the candidate schema asserts at each hashed value is among what that schema asserted there
(`assertions_at`), reached in ways that do not depend on the value; otherwise it is not replayable.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from aegis_sdk.models import Proposal
from aegis_server.engine import (
    SENSITIVE_PREFIX,
    EngineConfig,
    ParameterSchemaError,
    PolicySet,
    UnknownCapabilityError,
    evaluate,
)
from aegis_server.replay.schema_reach import assertions_at
from aegis_server.store.proposal_history import StoredProposal

__all__ = ["DEFAULT_DENY", "Redecider", "Tally", "TransitionTally", "redacted_paths"]

DEFAULT_DENY = "(default-deny)"
_HASH_LENGTH = len(SENSITIVE_PREFIX) + 64

_Path = tuple[str | int, ...]
_MAX_VERDICTS = 100_000
_DEADLINE_EVERY = 256  # proposals between two looks at the clock


def redacted_paths(value: Any, prefix: _Path = ()) -> list[_Path]:
    """The paths of the keyed hashes of sensitive values in `value` (the audited parameters)."""
    if isinstance(value, str):
        return [prefix] if len(value) == _HASH_LENGTH and value.startswith(SENSITIVE_PREFIX) else []
    found: list[_Path] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(redacted_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(redacted_paths(item, (*prefix, index)))
    return found


def _overlaps(read: tuple[str, ...], hashed: _Path) -> bool:
    """Whether a rule reading the action path `read` sees the hashed value at action path `hashed`."""
    length = min(len(read), len(hashed))
    return read[:length] == hashed[:length]


# What `evaluate` reads of a proposal (the attributes of `Proposal` it uses), built per stored proposal in a
# fraction of the time of the pydantic models (even unvalidated, `model_construct` took 4 µs a model here).
class _Actor(NamedTuple):
    id: str
    type: str


class _Action(NamedTuple):
    capability: str
    parameters: dict[str, Any]
    resource: str | None


class _Context(NamedTuple):
    session_id: str | None
    metadata: dict[str, Any]


class _Proposal(NamedTuple):
    actor: _Actor
    action: _Action
    context: _Context


@dataclass
class TransitionTally:
    count: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """The counts of a replay (or of one part of it: tallies of consecutive parts `merge` in order)."""

    samples: int
    stored: int = 0
    replayed: int = 0
    unchanged: int = 0
    confirmations_skipped: int = 0
    not_replayable: Counter[str] = field(default_factory=Counter)
    transitions: dict[tuple[str, str], TransitionTally] = field(default_factory=dict)
    versions: dict[int | None, list[int]] = field(default_factory=dict)  # version -> [proposals, changed]

    @property
    def changed(self) -> int:
        return self.replayed - self.unchanged

    def merge(self, later: Tally) -> None:
        """Add the tally of the part that follows this one (samples stay the oldest)."""
        self.stored += later.stored
        self.replayed += later.replayed
        self.unchanged += later.unchanged
        self.confirmations_skipped += later.confirmations_skipped
        self.not_replayable.update(later.not_replayable)
        for key, part in later.transitions.items():
            mine = self.transitions.setdefault(key, TransitionTally())
            mine.count += part.count
            mine.rules.update(part.rules)
            mine.samples.extend(part.samples[: max(0, self.samples - len(mine.samples))])
        for version, (proposals, changed) in later.versions.items():
            counts = self.versions.setdefault(version, [0, 0])
            counts[0] += proposals
            counts[1] += changed


class Redecider:
    """Re-decides stored proposals under one compiled candidate set."""

    def __init__(
        self,
        candidate: PolicySet,
        config: EngineConfig,
        original_schemas: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        """`original_schemas`: version -> capability -> parameter schema of the versions the redacted proposals
        were decided under (filled by the caller before it tallies them; a version missing here is unknown)."""
        self._candidate = candidate
        self._config = config
        self._reads: dict[str, tuple[tuple[str, ...], ...]] = {}
        self._originals: Mapping[int, Mapping[str, Any]] = original_schemas if original_schemas is not None else {}
        self._schema_verdicts: dict[tuple[str, int | None, tuple[_Path, ...]], bool] = {}

    def _action_reads(self, capability: str) -> tuple[tuple[str, ...], ...]:
        """The `action` paths read by the candidate rules (enforced and shadow) of a capability."""
        reads = self._reads.get(capability)
        if reads is None:
            compiled = self._candidate.compiled(capability)
            rules = () if compiled is None else (*compiled.rules, *compiled.shadow_rules)
            reads = tuple(sorted({path for rule in rules for path in rule.condition.paths.get("action", ())}, key=len))
            self._reads[capability] = reads
        return reads

    def _reads_hashed(self, capability: str, parameters: Mapping[str, Any]) -> bool:
        reads = self._action_reads(capability)
        if not reads:
            return False
        return any(_overlaps(read, ("parameters", *hashed)) for hashed in redacted_paths(parameters) for read in reads)

    def _schema_reads_hashed(self, capability: str, version: int | None, hashed: list[_Path]) -> bool:
        """Whether the candidate's schema for `capability` may decide on a hashed value (see the module)."""
        key = (capability, version, tuple(hashed))
        verdict = self._schema_verdicts.get(key)
        if verdict is None:
            if len(self._schema_verdicts) >= _MAX_VERDICTS:
                self._schema_verdicts.clear()
            verdict = self._schema_verdicts[key] = self._judge_schema(capability, version, hashed)
        return verdict

    def _judge_schema(self, capability: str, version: int | None, hashed: list[_Path]) -> bool:
        registered = self._candidate.capabilities.get(capability)
        if registered is None:
            return False  # refused as unknown_capability whatever the values
        schema = registered.parameter_schema
        original = self._originals.get(version, {}).get(capability) if version is not None else None
        if original is not None and original == schema:
            return False
        for path in hashed:
            asserted = assertions_at(schema, path)
            if asserted is None:
                return True
            if not asserted:
                continue
            before = None if original is None else assertions_at(original, path)
            if before is None or any(assertion not in before for assertion in asserted):
                return True
        return False

    def _refused_whatever_the_hashes(self, capability: str, parameters: Mapping[str, Any], hashed: list[_Path]) -> bool:
        """Whether the candidate schema refuses `parameters` for a reason away from their hashed values (a new
        required field, a bad clear value): the schema check passed, so no assertion reached the hashes other
        than those the values passed, and an error elsewhere is one the values would meet too."""
        compiled = self._candidate.compiled(capability)
        if compiled is None:
            return False
        for error in compiled.schema.validator.iter_errors(parameters):
            where = tuple(error.absolute_path)
            if not any(where[: len(path)] == path for path in hashed):
                return True
        return False

    def tally(self, stored: Iterable[StoredProposal], tally: Tally, deadline: float | None = None) -> bool:
        """Re-decide each of `stored` and count it in `tally`; False when `deadline` (a `time.monotonic()`)
        passed first (the proposals not re-decided are not counted)."""
        candidate, config = self._candidate, self._config
        transitions = tally.transitions
        versions = tally.versions
        for index, item in enumerate(stored):
            if deadline is not None and index % _DEADLINE_EVERY == 0 and time.monotonic() >= deadline:
                return False
            tally.stored += 1
            payload = item.payload
            if item.parent_decision_id is not None or payload.get("confirmation") is True:
                tally.confirmations_skipped += 1
                continue
            action = payload["action"]
            capability = action["capability"]
            parameters = action.get("parameters") or {}
            if item.redacted and (
                self._reads_hashed(capability, parameters)
                or self._schema_reads_hashed(capability, item.policy_version, redacted_paths(parameters))
            ):
                tally.not_replayable["sensitive_parameters"] += 1
                continue
            context = payload.get("context") or {}
            actor = payload["actor"]
            proposal = _Proposal(
                _Actor(actor["id"], actor["type"]),
                _Action(capability, parameters, action.get("resource")),
                _Context(context.get("session_id"), context.get("metadata") or {}),
            )
            try:
                evaluation = evaluate(cast(Proposal, proposal), candidate, now=item.decided_at, config=config)
                outcome: str = evaluation.outcome
                rule = evaluation.policy_ids[0] if evaluation.policy_ids else DEFAULT_DENY
            except UnknownCapabilityError:
                outcome, rule = "unknown_capability", "(unknown_capability)"
            except ParameterSchemaError:
                hashed = redacted_paths(parameters) if item.redacted else []
                if hashed and not self._refused_whatever_the_hashes(capability, parameters, hashed):
                    # A hash stands where the schema wants the value: whether the value was valid is unknown.
                    tally.not_replayable["sensitive_parameters"] += 1
                    continue
                outcome, rule = "invalid_parameters", "(invalid_parameters)"
            tally.replayed += 1
            counts = versions.get(item.policy_version)
            if counts is None:
                counts = versions[item.policy_version] = [0, 0]
            counts[0] += 1
            if outcome == item.outcome:
                tally.unchanged += 1
                continue
            counts[1] += 1
            key = (item.outcome, outcome)
            transition = transitions.get(key)
            if transition is None:
                transition = transitions[key] = TransitionTally()
            transition.count += 1
            transition.rules[rule] += 1
            if len(transition.samples) < tally.samples:
                transition.samples.append(item.decision_id)
        return True
