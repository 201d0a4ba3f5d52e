"""Input limits: body size (enforced while reading, chunked bodies included), content type, strict JSON
(no duplicate keys — also after NFC —, no NaN, no number (integers included) beyond a 64-bit float, no
U+0000 or unpaired surrogates), nesting depth, no NUL in path, query or headers. (The per-key rate limit
lives in `rate_limits.py`.)

The body guard is pure ASGI and sits in front of the routers: it reads the whole body (at most
`max_body_bytes`), checks it, and replays it, so the routers see only well-formed JSON.
"""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis_server.errors import ApiError, send_error, validation_error

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

PARSED_BODY = "aegis_parsed_body"
"""Key of `request.state` holding the body the guard parsed (absent for an empty body), so a route can
validate it without parsing the same bytes again."""


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs) and "".join(result).isascii():  # no repeat, and ASCII keys are NFC already
        return result
    seen: set[str] = set()
    for key, _ in pairs:
        # Keys equal after NFC are one key to the canonical form (audit chain, token binding): a repeat.
        normal = unicodedata.normalize("NFC", key)
        if normal in seen or key in seen:
            raise DuplicateKeyError(key)
        seen.add(normal)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class NumberOutOfRange(ValueError):
    """A JSON number beyond a 64-bit float (the documented limit; docs/api.md)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NumberOutOfRange("a number out of range (larger than a 64-bit float can hold)")
    return value


_MAX_FLOAT = sys.float_info.max
_MAX_INT_DIGITS = len(str(int(_MAX_FLOAT)))  # 309: a longer integer literal is beyond any 64-bit float


def _bounded_int(text: str) -> int:
    """An integer literal within the range of a 64-bit float (the documented limit of every number), checked
    on its length before it is converted: a 5,000-digit literal never reaches `int()` (whose error quotes
    Python's `sys.set_int_max_str_digits`)."""
    digits = len(text) - (text[0] == "-")
    if digits > _MAX_INT_DIGITS or (digits == _MAX_INT_DIGITS and abs(int(text)) > _MAX_FLOAT):
        raise NumberOutOfRange(f"an integer of {digits} digits, out of range (larger than a 64-bit float can hold)")
    return int(text)


# Built once: `json.loads` with hooks builds a decoder (and its scanner) on every call.
_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_hook,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    parse_int=_bounded_int,
)

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# In valid UTF-8 JSON, U+0000 and surrogates can only be written as \u escapes: a body without one of these
# needs no walk over its strings.
_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")


def _bad_string(value: Any) -> str | None:
    """Why a parsed JSON value cannot be stored: a string or key holding U+0000 (PostgreSQL text refuses
    it) or an unpaired surrogate escape such as "\\ud800" (not encodable as UTF-8); None when it is fine."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: Any = (item,)
        elif isinstance(item, dict):
            texts = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            texts = ()
            stack.extend(item)
        else:
            continue
        for text in texts:
            found = _BAD_CHARACTER.search(text)
            if found is not None:
                return "U+0000" if found.group() == "\x00" else "an unpaired surrogate (\\ud800-\\udfff)"
    return None


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """True when containers nest deeper than `max_depth` (a top-level object is depth 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                return True
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, dict | list))
        elif isinstance(item, list):
            if depth > max_depth:
                return True
            stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False


def parse_strict_json(data: bytes, max_depth: int) -> Any:
    """Parse a JSON body or raise the ApiError to answer with (400 / 422)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise validation_error(400, "invalid_json", "The body is not UTF-8. Send UTF-8 encoded JSON.") from None
    try:
        if text.startswith("\ufeff"):  # as `json.loads` refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _STRICT_DECODER.decode(text)
    except DuplicateKeyError as exc:
        raise validation_error(
            400,
            "duplicate_keys",
            f"The body repeats the key {exc.key!r} in one object. Send each key once.",
            {"key": exc.key},
        ) from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    except NumberOutOfRange as exc:
        raise validation_error(
            400,
            "invalid_json",
            f"The body holds {exc}. Numbers must be within ±1.7976931348623157e308 (integers: at most "
            f"{_MAX_INT_DIGITS} digits); send large values as strings.",
            {},
        ) from None
    except ValueError as exc:
        raise validation_error(
            400, "invalid_json", f"The body is not valid JSON ({exc}). Send one JSON document.", {}
        ) from None
    # Each container opens with "{" or "[": a body with no more of them than max_depth cannot nest deeper.
    if text.count("{") + text.count("[") > max_depth and json_depth_exceeds(value, max_depth):
        raise _too_deep(max_depth)
    bad = _bad_string(value) if _BAD_ESCAPE.search(text) else None
    if bad is not None:
        raise validation_error(
            400, "invalid_json", f"The body holds a string with {bad}, which AEGIS does not accept. Remove it.", {}
        )
    return value


def _too_deep(max_depth: int) -> ApiError:
    return validation_error(
        422,
        "too_deep",
        f"The body nests objects/arrays deeper than {max_depth} levels. Flatten it.",
        {"max_depth": max_depth},
    )


def _is_json_media_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_nul(scope: Scope) -> bool:
    """A NUL in the decoded path, the query string or a header value (PostgreSQL text cannot hold it)."""
    if "\x00" in str(scope.get("path", "")) or b"%00" in bytes(scope.get("query_string", b"")):
        return True
    return any(b"\x00" in value for _, value in scope.get("headers", ()))


class BodyGuardMiddleware:
    """Reads and checks request bodies under `path_prefix` before the app sees them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_depth: int, path_prefix: str = "/api/") -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.path_prefix = path_prefix

    def _too_large(self) -> ApiError:
        return validation_error(
            413,
            "body_too_large",
            f"The body is larger than {self.max_body_bytes} bytes. Send less (the limit is a server setting).",
            {"max_bytes": self.max_body_bytes},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await send_error(
                send,
                validation_error(
                    422,
                    "invalid_request",
                    "The path, query or a header holds a NUL character (%00), which no id, name or filter may "
                    "contain. Remove it.",
                    {},
                ),
            )
            return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = ""
        declared_length: int | None = None
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                try:
                    declared_length = int(value)
                except ValueError:
                    declared_length = None
        if declared_length is not None and declared_length > self.max_body_bytes:
            await send_error(send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_error(send, self._too_large())
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body:
            if not _is_json_media_type(content_type):
                await send_error(
                    send,
                    validation_error(
                        415,
                        "unsupported_media_type",
                        f"Content-Type {content_type or '(none)'} is not accepted. Send application/json.",
                        {"content_type": content_type},
                    ),
                )
                return
            try:
                scope.setdefault("state", {})[PARSED_BODY] = parse_strict_json(body, self.max_depth)
            except ApiError as error:
                await send_error(send, error)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


__all__ = ["PARSED_BODY", "BodyGuardMiddleware", "json_depth_exceeds", "parse_strict_json"]
