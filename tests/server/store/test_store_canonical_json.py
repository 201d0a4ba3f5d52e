"""canonical_json / canonical_hash: one byte string per JSON value, whatever the key order or Unicode form."""

from __future__ import annotations

import json
import random
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis_sdk._wire.canonical import (
    CanonicalJSON,
    canonical_hash,
    canonical_json,
    canonical_json_with,
    canonical_text,
    normalise_json,
)
from aegis_server.store.chain import link_hash

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _typed(value: Any) -> Any:
    """A type-tagged, order-free view of a JSON value: what "the same value" means for canonical JSON
    (NFC-equal strings are equal; 1 and 1.0 are the same JSON number; true is not 1)."""
    if isinstance(value, float) and value == 0.0:
        return ("number", 0)
    if value is None or isinstance(value, bool):
        return ("atom", value)
    if isinstance(value, int | float):
        if (isinstance(value, int) or value.is_integer()) and abs(value) < 2**53:
            return ("number", int(value))
        # beyond 2**53 an int and a float are spelt differently (digits vs exponent): different values
        return ("number", type(value).__name__, value)
    if isinstance(value, str):
        return ("string", unicodedata.normalize("NFC", value))
    if isinstance(value, list):
        return ("array", tuple(_typed(item) for item in value))
    return ("object", frozenset((unicodedata.normalize("NFC", k), _typed(v)) for k, v in value.items()))


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


def _nfd(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, dict):
        return {unicodedata.normalize("NFD", key): _nfd(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nfd(item) for item in value]
    return value


def _nfc_unique_keys(value: Any) -> bool:
    if isinstance(value, dict):
        keys = [unicodedata.normalize("NFC", key) for key in value]
        return len(keys) == len(set(keys)) and all(_nfc_unique_keys(item) for item in value.values())
    if isinstance(value, list):
        return all(_nfc_unique_keys(item) for item in value)
    return True


valid_values = json_values.filter(_nfc_unique_keys)


@given(valid_values, st.randoms(use_true_random=False))
def test_key_order_does_not_change_the_hash(value: Any, rng: random.Random) -> None:
    assert canonical_hash(_shuffled(value, rng)) == canonical_hash(value)


@given(valid_values)
def test_unicode_normalisation_form_does_not_change_the_hash(value: Any) -> None:
    assert canonical_hash(_nfd(value)) == canonical_hash(value)


@settings(max_examples=300, deadline=None)
@given(valid_values, valid_values)
def test_different_values_have_different_hashes(a: Any, b: Any) -> None:
    assert (canonical_hash(a) == canonical_hash(b)) == (_typed(a) == _typed(b))


@given(valid_values)
def test_output_is_compact_utf8_json_of_the_same_value(value: Any) -> None:
    raw = canonical_json(value)
    assert _typed(json.loads(raw.decode("utf-8"))) == _typed(value)
    assert canonical_json(json.loads(raw)) == raw  # idempotent
    assert canonical_hash(value) == __import__("hashlib").sha256(raw).hexdigest()


def test_exact_bytes() -> None:
    value = {"b": [1, 2.5, True, None], "a": "e\u0301", "é": {"z": 1.0, "y": -0.0}}
    assert canonical_json(value) == '{"a":"é","b":[1,2.5,true,null],"é":{"y":0,"z":1}}'.encode()


def test_keys_equal_after_nfc_are_rejected() -> None:
    with pytest.raises(ValueError, match="NFC"):
        canonical_json({"\u00e9": 1, "e\u0301": 2})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        canonical_json({"x": [bad]})


@pytest.mark.parametrize("bad", [{1: "x"}, {"x": object()}, {"x": b"bytes"}, {"x": {1, 2}}])
def test_non_json_types_are_rejected(bad: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(bad)


def test_normalise_json_returns_plain_data() -> None:
    assert normalise_json(({"k": 2.0},)) == [{"k": 2}]


# normalise_json takes a fast path for plain data (exact dict/list/str/int/float types, NFC only for
# non-ASCII text) and falls back to the general walk for anything else: both must agree on every value.
_unicode_keys = st.text(
    alphabet=st.sampled_from(["a", "K", "\u212a", "e", "\u0301", "\u00e9", "\U0001f600"]), max_size=3
)
_tricky_values = st.recursive(
    _scalars | st.lists(st.sampled_from(["a", "\u212a", "e\u0301", "\u00e9", "\x7f"]), max_size=4).map("".join),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(_unicode_keys, children, max_size=4)
    ),
    max_leaves=15,
)


def _general(value: Any) -> Any:
    from aegis_sdk._wire.canonical import _normalise

    return _normalise(value, "$")


@given(_tricky_values)
@settings(max_examples=300)
def test_the_fast_path_agrees_with_the_general_walk(value: Any) -> None:
    try:
        expected: Any = ("ok", _general(value))
    except (TypeError, ValueError) as exc:
        expected = ("error", type(exc), str(exc))
    try:
        got: Any = ("ok", normalise_json(value))
    except (TypeError, ValueError) as exc:
        got = ("error", type(exc), str(exc))
    assert got == expected


def test_a_key_that_becomes_another_after_nfc_is_rejected_in_either_order() -> None:
    for value in ({"K": 1, "\u212a": 2}, {"\u212a": 1, "K": 2}):  # KELVIN SIGN is K after NFC
        with pytest.raises(ValueError, match="NFC"):
            normalise_json(value)


def _reference_bytes(value: Any) -> bytes:
    """canonical_json as first written: the general walk, then the standard library's encoder."""
    from aegis_sdk._wire.canonical import _normalise

    return json.dumps(
        _normalise(value, "$"), ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


_any_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**80), max_value=2**80)
_wide_values = st.recursive(
    _any_numbers | st.text(max_size=8) | st.booleans() | st.none(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=15,
).filter(_nfc_unique_keys)


@given(_wide_values)
@settings(max_examples=500)
def test_canonical_bytes_are_those_of_the_reference_encoder(value: Any) -> None:
    # orjson writes plain data (floats between 1e-4 and 1e16, 64-bit integers); everything else goes
    # through the standard library: the bytes, and so every stored hash, stay the same either way.
    assert canonical_json(value) == _reference_bytes(value)


@pytest.mark.parametrize(
    "number", [1e-05, 0.0001, 0.2, 1 / 3, 123456789.125, 9007199254740993.0, 1e16, 1e300, 2**63, 2**64, -(2**63) - 1]
)
def test_numbers_at_the_edges_of_the_fast_encoder(number: float) -> None:
    assert canonical_json({"n": number, "list": [number]}) == _reference_bytes({"n": number, "list": [number]})


_record_fields = st.fixed_dictionaries(
    {
        "audit_ref": st.text(max_size=8),
        "sequence": st.integers(min_value=1, max_value=2**70),
        "actor_id": st.none() | st.text(max_size=6) | st.sampled_from(["e\u0301", "\u212a"]),
        "outcome": st.none() | st.just("ALLOW"),
        "previous_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    }
)


@given(_record_fields, _wide_values)
@settings(max_examples=500)
def test_a_payload_encoded_once_is_embedded_as_the_same_bytes(fields: dict[str, Any], payload: Any) -> None:
    # The audit chain encodes each payload once and embeds the text in the record's hashed document:
    # the bytes, and so the hash, are those of the record with the payload as a value.
    encoded = canonical_text(payload)
    assert isinstance(encoded, CanonicalJSON)
    assert encoded.encode("utf-8") == canonical_json(payload)
    assert canonical_json_with(fields, "payload", encoded) == canonical_json({**fields, "payload": payload})
    assert link_hash({**fields, "payload": encoded}) == link_hash({**fields, "payload": payload})
