"""Reading a request to the fake as the server reads it: a strict JSON body, and pydantic models from it.

Limits are the server's defaults: a body of at most 1 MiB, nesting at most 32 levels deep; duplicate
keys, NaN/Infinity and non-UTF-8 text are refused with the server's codes.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from aegis_sdk._wire.envelope import ApiError, validation_error

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "read_body", "read_model"]

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32


def _pydantic_error(error: ValidationError, where: str = "body") -> ApiError:
    errors = [
        {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    parts = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or where}: {e['msg']}" for e in errors[:5])
    return validation_error(
        422,
        "invalid_request",
        f"The request is invalid — {parts}. Fix these fields and send it again.",
        {"errors": errors},
    )


_M = TypeVar("_M", bound=BaseModel)


def read_model(model: type[_M], body: Any) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _pydantic_error(error) from None


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _too_deep() -> ApiError:
    return validation_error(
        422,
        "too_deep",
        f"The body nests objects/arrays deeper than {MAX_JSON_DEPTH} levels. Flatten it.",
        {"max_depth": MAX_JSON_DEPTH},
    )


def read_body(request: httpx.Request) -> Any:
    """The strict JSON body of a POST/PUT, or None when there is none (the server's body guard)."""
    data = request.content
    if len(data) > MAX_BODY_BYTES:
        raise validation_error(
            413,
            "body_too_large",
            f"The body is larger than {MAX_BODY_BYTES} bytes. Send less (the limit is a server setting).",
            {"max_bytes": MAX_BODY_BYTES},
        )
    if not data:
        return None
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        raise validation_error(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'} is not accepted. Send application/json.",
            {"content_type": content_type},
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise validation_error(400, "invalid_json", "The body is not UTF-8. Send UTF-8 encoded JSON.") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except _DuplicateKeyError as error:
        raise validation_error(
            400,
            "duplicate_keys",
            f"The body repeats the key {error.key!r} in one object. Send each key once.",
            {"key": error.key},
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as error:
        raise validation_error(
            400, "invalid_json", f"The body is not valid JSON ({error}). Send one JSON document."
        ) from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise _too_deep()
    return value
