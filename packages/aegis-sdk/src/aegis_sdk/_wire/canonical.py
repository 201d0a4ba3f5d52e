"""Canonical JSON: one byte string per JSON value, used for the audit hash chain and for token binding.

One implementation for `aegis-server` and the SDK's fake platform (`aegis_sdk.testing`); both import it
from here. orjson, when installed (the server depends on it), writes the common
case fast; without it the standard library writes the same bytes.

Rules (close to RFC 8785, documented where they differ):

- object keys sorted by Unicode code point (RFC 8785 sorts by UTF-16 code units; the two only differ for
  keys holding characters outside the Basic Multilingual Plane, and we only need *a* fixed order);
- every string and every key NFC-normalised, so "é" typed as one code point or as "e" + accent is the
  same value; two keys of one object that are equal after NFC are rejected (`ValueError`), since the
  object would otherwise mean two different things to two readers;
- no whitespace, UTF-8, non-ASCII characters written as themselves;
- numbers: `bool` stays `true`/`false`; integers as digits; floats must be finite (`ValueError` for NaN
  and infinities); a float with an integral value below 2**53 is written as an integer (`1.0` -> `1`,
  `-0.0` -> `0`), as JSON has one number type and a client may send either spelling; other floats use
  Python's shortest round-trip repr;
- tuples are arrays; any other type (datetime, bytes, sets, objects) is a `TypeError`: convert it first.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Mapping
from types import ModuleType
from typing import Any

_orjson: ModuleType | None
try:  # the server installs orjson; the SDK alone writes the same bytes with the standard library
    import orjson as _orjson
except ImportError:  # pragma: no cover - the SDK's own wheel, without the server's dependencies
    _orjson = None

__all__ = [
    "CanonicalJSON",
    "canonical_hash",
    "canonical_json",
    "canonical_json_with",
    "canonical_text",
    "normalise_json",
]

_MAX_SAFE_INTEGER = 2**53


def normalise_json(value: Any) -> Any:
    """Return `value` as plain JSON data (dict, list, str, int, float, bool, None) in canonical form.

    Raises `TypeError` for a value JSON cannot hold and `ValueError` for a non-finite float or for two
    keys of one object that are equal after NFC normalisation.
    """
    try:
        return _normalise_plain(value)
    except _NotPlain:
        return _normalise(value, "$")


class _NotPlain(Exception):
    """Raised by `_normalise_plain` for anything but plain JSON data in the common range: the general
    `_normalise` then decides (it accepts any Mapping and int subclass, and words the errors with paths)."""


# Floats that orjson and Python's repr() spell alike (repr switches to exponents outside this range, and
# orjson spells exponents its own way); integers orjson can write (64 bits).
_PLAIN_FLOAT_MIN = 1e-4
_PLAIN_FLOAT_LIMIT = 1e16
_PLAIN_INT_MIN = -(2**63)
_PLAIN_INT_LIMIT = 2**64


def _normalise_plain(value: Any) -> Any:
    # The hot path (every decision hashes its parameters and two audit records): exact types only, no
    # paths built, NFC only for non-ASCII text (ASCII text is already NFC), and only numbers that
    # `canonical_json` may hand to orjson. The members of objects and arrays that are ASCII text, None or
    # booleans (most of them) are taken without a call.
    kind = type(value)
    if kind is dict:
        result: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            if not key.isascii():
                key = unicodedata.normalize("NFC", key)
            item_kind = type(item)
            if item_kind is str:
                result[key] = item if item.isascii() else unicodedata.normalize("NFC", item)
            elif item is None or item_kind is bool:
                result[key] = item
            else:
                result[key] = _normalise_plain(item)
        if len(result) != len(value):  # two keys were one after NFC
            raise _NotPlain
        return result
    if kind is str:
        return value if value.isascii() else unicodedata.normalize("NFC", value)
    if kind is list or kind is tuple:
        return [item if type(item) is str and item.isascii() else _normalise_plain(item) for item in value]
    if value is None or kind is bool:
        return value
    if kind is int:
        if not _PLAIN_INT_MIN <= value < _PLAIN_INT_LIMIT:
            raise _NotPlain
        return value
    if kind is float:
        if value.is_integer() and abs(value) < _MAX_SAFE_INTEGER:
            return int(value)
        if not _PLAIN_FLOAT_MIN <= abs(value) < _PLAIN_FLOAT_LIMIT:  # also NaN and the infinities
            raise _NotPlain
        return value
    raise _NotPlain


def _normalise(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value!r} is not a finite number; JSON has no NaN or infinity")
        if value.is_integer() and abs(value) < _MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object key {key!r} is a {type(key).__name__}; JSON keys are strings")
            normal_key = unicodedata.normalize("NFC", key)
            if normal_key in result:
                raise ValueError(
                    f"{path}: two keys are equal after Unicode NFC normalisation ({normal_key!r}); "
                    "keep only one spelling of the key"
                )
            result[normal_key] = _normalise(item, f"{path}.{normal_key}")
        return result
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(
        f"{path}: a {type(value).__name__} is not JSON data; convert it to a string, number, "
        "boolean, null, list or object first"
    )


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of `value` (see the module docstring for the rules)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(_normalise_plain(value), option=_orjson.OPT_SORT_KEYS)  # type: ignore[no-any-return]
        except (_NotPlain, _orjson.JSONEncodeError):  # other values, and errors worded by the general walk
            pass
    return json.dumps(
        normalise_json(value),
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")


class CanonicalJSON(str):
    """Text that is already the canonical JSON of a value (`canonical_text`). The stores write it as it
    is and `canonical_json_with` embeds it, so a document encoded once is not walked again."""

    __slots__ = ()


def canonical_text(value: Any) -> CanonicalJSON:
    """`canonical_json(value)` as text, marked as canonical."""
    return CanonicalJSON(canonical_json(value).decode("utf-8"))


def canonical_json_with(value: Mapping[str, Any], key: str, encoded: CanonicalJSON) -> bytes:
    """`canonical_json({**value, key: <the value encoded>})`, with `encoded` embedded as it is."""
    if _orjson is not None:
        try:
            plain = _normalise_plain(dict(value))
            if key in plain:
                raise _NotPlain
            plain[key] = _orjson.Fragment(encoded.encode("utf-8"))
            return _orjson.dumps(plain, option=_orjson.OPT_SORT_KEYS)  # type: ignore[no-any-return]
        except (_NotPlain, _orjson.JSONEncodeError):
            pass
    return canonical_json({**value, key: json.loads(encoded)})


def canonical_hash(value: Any) -> str:
    """The SHA-256 (hex) of `canonical_json(value)`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
