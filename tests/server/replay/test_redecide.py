"""The re-decision of one stored proposal: which rules make a hashed value unreplayable, that the stand-in the
replay gives `evaluate` decides as the real proposal does, and how the tallies of parts merge."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from aegis_sdk.models import Capability, Policy, Proposal
from aegis_server.engine import EngineConfig, compile_policy_set, evaluate, hash_value
from aegis_server.replay.redecide import Redecider, Tally, redacted_paths
from aegis_server.store.proposal_history import StoredProposal

NOW = datetime(2030, 1, 1, 9, 30, tzinfo=timezone.utc)
HASHED = hash_value("4000000000000002", b"k" * 32)
SCHEMA = {
    "type": "object",
    "properties": {
        "card": {"type": "object", "properties": {"number": {"type": "string", "x-sensitive": True}}},
        "amount": {"type": "number"},
        "pin": {"type": "string", "x-sensitive": True},
    },
}


def _set(*conditions: str, shadow: bool = False, schema: dict[str, Any] | None = None) -> Any:
    rules = [{"capability": "pay", "outcome": "DENY", "condition": c} for c in conditions]
    rules.append({"capability": "pay", "outcome": "ALLOW", "condition": "true"})
    policy = {"name": "p", "rules": rules, **({"mode": "shadow"} if shadow else {})}
    allow = {"name": "q", "rules": [{"capability": "pay", "outcome": "ALLOW"}]}
    return compile_policy_set(
        [Policy.model_validate(policy), Policy.model_validate(allow)],
        [Capability.model_validate({"name": "pay", "risk_level": "low", "parameter_schema": schema or SCHEMA})],
    )


def _stored(parameters: dict[str, Any], outcome: str = "ALLOW", decision_id: str = "dec_1") -> StoredProposal:
    payload = {
        "actor": {"id": "a", "type": "ai-agent"},
        "action": {"capability": "pay", "params_hash": "x", "parameters": parameters},
        "context": {"session_id": "s", "metadata": {"k": 1}},
        "confirmation": False,
    }
    return StoredProposal(1, decision_id, NOW, outcome, ["q/0"], 3, None, payload, HASHED in str(parameters))


def _tally(
    policy_set: Any, *stored: StoredProposal, samples: int = 10, decided_under: dict[str, Any] | None = None
) -> Tally:
    """`stored` (decided under version 3, whose parameter schema is `decided_under`, SCHEMA by default)
    re-decided under `policy_set`."""
    tally = Tally(samples=samples)
    Redecider(policy_set, EngineConfig(), {3: {"pay": decided_under or SCHEMA}}).tally(stored, tally)
    return tally


def test_redacted_paths_are_found_by_their_form() -> None:
    value = {"card": {"number": HASHED}, "pins": [1, HASHED], "note": "hmac-sha256:short", "amount": 5}
    assert redacted_paths(value) == [("card", "number"), ("pins", 1)]


@pytest.mark.parametrize(
    ("condition", "replayable"),
    [
        ("action.parameters.amount > 10", True),
        ("action.capability == 'pay'", True),
        ("action.parameters.card.number.startsWith('4000')", False),
        ("has(action.parameters.card)", False),  # reads the object holding the hashed value
        ("size(action.parameters) > 5", False),  # the parameters whole
        ("action.parameters['card'] == {}", False),  # an index stops the path at the parameters
        ("action.resource == 'x'", True),
    ],
)
def test_a_rule_reading_the_hashed_value_makes_the_proposal_not_replayable(condition: str, replayable: bool) -> None:
    item = _stored({"card": {"number": HASHED}, "amount": 5})
    for shadow in (False, True):
        tally = _tally(_set(condition, shadow=shadow), item)
        assert tally.replayed == int(replayable), (condition, shadow)
        assert dict(tally.not_replayable) == ({} if replayable else {"sensitive_parameters": 1})


def test_a_hash_the_candidate_schema_refuses_is_not_replayable_but_a_clear_value_is_a_refusal() -> None:
    numeric = {"type": "object", "properties": {"pin": {"type": "integer"}, "amount": {"type": "number"}}}
    candidate = _set("action.parameters.amount > 10", schema=numeric)
    tally = _tally(
        candidate, _stored({"pin": HASHED, "amount": 5}), _stored({"pin": "1234", "amount": 5}, decision_id="dec_2")
    )
    assert dict(tally.not_replayable) == {"sensitive_parameters": 1}
    assert {key: part.samples for key, part in tally.transitions.items()} == {
        ("ALLOW", "invalid_parameters"): ["dec_2"]
    }


def test_the_stand_in_decides_as_the_proposal_does() -> None:
    candidate = _set("action.parameters.amount > 10 && time.hour < 10 && context.metadata.k == 1 && actor.id == 'a'")
    for amount in (5, 50):
        item = _stored({"card": {"number": "clear"}, "amount": amount})
        payload = item.payload
        proposal = Proposal.model_validate(
            {
                "actor": payload["actor"],
                "action": {"capability": "pay", "parameters": payload["action"]["parameters"]},
                "context": payload["context"],
            }
        )
        expected = evaluate(proposal, candidate, now=NOW, config=EngineConfig()).outcome
        tally = _tally(candidate, item)
        assert (tally.unchanged, list(tally.transitions)) == (
            (1, []) if expected == "ALLOW" else (0, [("ALLOW", expected)])
        )
    assert expected == "DENY"


def test_tallies_merge_in_order_keeping_the_oldest_samples() -> None:
    candidate = _set("action.parameters.amount > 10")
    first = _tally(candidate, *(_stored({"amount": 50}, decision_id=f"dec_a{i}") for i in range(3)), samples=2)
    second = _tally(candidate, *(_stored({"amount": 50}, decision_id=f"dec_b{i}") for i in range(3)), samples=2)
    first.merge(second)
    part = first.transitions[("ALLOW", "DENY")]
    assert (part.count, part.samples, dict(part.rules)) == (6, ["dec_a0", "dec_a1"], {"p/0": 6})
    assert (first.stored, first.replayed, first.changed, first.versions) == (6, 6, 6, {3: [6, 6]})


CARD = {"type": "string", "x-sensitive": True}


def _object(properties: dict[str, Any], **keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **keywords}


# (the schema the proposal was decided under, the candidate's schema): the candidate's schema decides on the
# value the audit keeps only as a hash, so validating the hash would be a guess.
SCHEMA_GUESSES = {
    "minLength": (_object({"card": CARD}), _object({"card": {**CARD, "minLength": 20}})),
    "maxLength": (_object({"card": CARD}), _object({"card": {**CARD, "maxLength": 200}})),
    "not pattern": (_object({"card": CARD}), _object({"card": {**CARD, "not": {"pattern": "^4"}}})),
    "if/then on the value": (
        _object({"card": CARD, "cvv": {"type": "string"}}),
        {
            **_object({"card": CARD, "cvv": {"type": "string"}}),
            "if": {"properties": {"card": {"pattern": "^4"}}, "required": ["card"]},
            "then": {"required": ["cvv"]},
        },
    ),
    "type change": (
        _object({"card": {"type": "object", "x-sensitive": True}}),
        _object({"card": {"type": "string", "x-sensitive": True}}),
    ),
    "anyOf branch on the value": (
        _object({"card": CARD}),
        {**_object({"card": CARD}), "anyOf": [{"properties": {"card": {"pattern": "^5"}}}, {"required": ["x"]}]},
    ),
    "enum of the whole": (_object({"card": CARD}), {**_object({"card": CARD}), "enum": [{"card": "4000"}]}),
    "through a $ref": (
        _object({"card": CARD}),
        {"type": "object", "$defs": {"c": {**CARD, "pattern": "^4"}}, "properties": {"card": {"$ref": "#/$defs/c"}}},
    ),
    "additionalProperties": (
        {"type": "object", "additionalProperties": CARD},
        {"type": "object", "additionalProperties": {**CARD, "minLength": 99}},
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_GUESSES))
def test_a_candidate_schema_deciding_on_the_hashed_value_makes_the_proposal_not_replayable(name: str) -> None:
    decided_under, candidate_schema = SCHEMA_GUESSES[name]
    candidate = _set(schema=candidate_schema)
    tally = _tally(candidate, _stored({"card": HASHED}), decided_under=decided_under)
    assert (tally.replayed, dict(tally.not_replayable)) == (0, {"sensitive_parameters": 1}), name
    # the version it was decided under unknown (deleted, or decided before versions): not replayable either
    unknown = Tally(samples=1)
    Redecider(candidate, EngineConfig()).tally([_stored({"card": HASHED})], unknown)
    assert dict(unknown.not_replayable) == {"sensitive_parameters": 1}, name


@pytest.mark.parametrize(
    ("decided_under", "candidate_schema"),
    [
        # the same schema: the value passed it when it was decided (and so does the hash)
        (
            {**_object({"card": {**CARD, "minLength": 4}}), "if": {"properties": {"card": {"pattern": "^4"}}}},
            {**_object({"card": {**CARD, "minLength": 4}}), "if": {"properties": {"card": {"pattern": "^4"}}}},
        ),
        # what the candidate asserts at the hash is what was asserted there; the change is elsewhere
        (_object({"card": CARD}), _object({"card": CARD, "amount": {"type": "number"}}, required=["card"])),
        # an annotation of the application's own (x-*) asserts nothing
        (_object({"card": CARD}), _object({"card": {**CARD, "x-note": "masked in the UI"}})),
        # fewer assertions at the hash, and branches that never reach it
        (
            _object({"card": {**CARD, "minLength": 4}}),
            {**_object({"card": {"x-sensitive": True, "description": "the card"}}), "anyOf": [{"required": ["card"]}]},
        ),
    ],
)
def test_a_candidate_schema_asserting_at_the_hash_only_what_it_passed_replays(
    decided_under: dict[str, Any], candidate_schema: dict[str, Any]
) -> None:
    tally = _tally(_set(schema=candidate_schema), _stored({"card": HASHED}), decided_under=decided_under)
    assert (tally.replayed, tally.unchanged, dict(tally.not_replayable)) == (1, 1, {})


def test_a_redacted_proposal_the_candidate_refuses_away_from_its_hashes_is_a_refusal() -> None:
    decided_under = _object({"card": CARD})
    needs_currency = _object({"card": CARD, "currency": {"type": "string"}}, required=["currency"])
    tally = _tally(_set(schema=needs_currency), _stored({"card": HASHED}), decided_under=decided_under)
    assert dict(tally.not_replayable) == {}
    assert {key: part.samples for key, part in tally.transitions.items()} == {
        ("ALLOW", "invalid_parameters"): ["dec_1"]
    }

    # refused at the hash itself (the same schema, which the value passed): not replayable, never a refusal
    digits = _object({"card": {**CARD, "pattern": "^[0-9]+$"}})
    held = _tally(_set(schema=digits), _stored({"card": HASHED}), decided_under=digits)
    assert (held.replayed, dict(held.not_replayable)) == (0, {"sensitive_parameters": 1})
