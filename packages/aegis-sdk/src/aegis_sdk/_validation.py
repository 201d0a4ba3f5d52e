"""Input checks that run before any request: a bad argument raises `InvalidRequestError` and nothing is sent.

Also the JSON encoding of request bodies (a value JSON cannot carry is the caller's error, caught here)."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote

import pydantic
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from aegis_sdk._constants import MAX_PAGE_SIZE
from aegis_sdk.errors import InvalidRequestError

M = TypeVar("M", bound=BaseModel)


def describe_validation(exc: pydantic.ValidationError, prefix: str = "") -> tuple[str, list[dict[str, Any]]]:
    """Field paths and messages of a validation error, never the offending values (they may be secrets)."""
    problems: list[dict[str, Any]] = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(part) for part in (*([prefix] if prefix else []), *error["loc"]))
        problems.append({"loc": loc or "(body)", "msg": error["msg"], "type": error["type"]})
    text = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems)
    return text, problems


def invalid_input(what: str, exc: pydantic.ValidationError, prefix: str = "") -> InvalidRequestError:
    """The error for a `what` (proposal, policy, ...) that failed its model's validation."""
    text, problems = describe_validation(exc, prefix)
    return InvalidRequestError(
        f"Invalid {what}, nothing was sent: {text}.", code="invalid_request", details={"errors": problems}
    )


def validate_model(model: type[M], value: object, what: str) -> M:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        raise invalid_input(what, exc, what) from None


def _encode_json(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"The {what} is not JSON-serialisable, nothing was sent: {exc}. Pass only str, int, float, bool, "
            "None, lists and dicts (datetimes and other pydantic-serialisable values are converted).",
            code="invalid_request",
        ) from None


def dump_model(model: BaseModel, what: str) -> bytes:
    """A request body: the model as compact JSON, without the fields that are None."""
    try:
        data = model.model_dump(mode="json", exclude_none=True)
    except PydanticSerializationError as exc:
        raise InvalidRequestError(
            f"The {what} is not JSON-serialisable, nothing was sent: {exc}. Pass only str, int, float, bool, "
            "None, lists and dicts.",
            code="invalid_request",
        ) from None
    return _encode_json(data, what)


def check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise InvalidRequestError(
            f"{name} must be a non-empty string, got {got}.",
            code="invalid_request",
        )
    return value


def path_segment(value: object, name: str) -> str:
    """An id or name checked and quoted for use as one segment of a URL path."""
    return quote(check_id(value, name), safe="")


def check_timeout(value: float | None, name: str = "timeout") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise InvalidRequestError(
            f"{name} must be a positive number of seconds, got {value!r}.", code="invalid_request"
        )
    return float(value)


def check_idempotency_key(value: object) -> str:
    """The caller's Idempotency-Key, checked, or a fresh UUID when there is none."""
    if value is None:
        return str(uuid.uuid4())
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 255
        or not value.isascii()
        or not value.isprintable()
        or any(ch.isspace() for ch in value)
    ):
        raise InvalidRequestError(
            "idempotency_key must be 1 to 255 printable ASCII characters without spaces (a UUID is ideal).",
            code="invalid_request",
        )
    return value


def time_param(value: str | datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRequestError(
                f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)); got a naive datetime.",
                code="invalid_request",
            )
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidRequestError(f"{name} must be an RFC 3339 string or an aware datetime.", code="invalid_request")


def list_params(
    *,
    limit: int | None,
    cursor: str | None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    **filters: str | None,
) -> dict[str, str]:
    """The query string of one page of a listing, every filter checked."""
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise InvalidRequestError(f"{name} must be a non-empty string.", code="invalid_request")
        params[name] = value
    for name, moment in (("since", since), ("until", until)):
        text = time_param(moment, name)
        if text is not None:
            params[name] = text
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequestError(
                f"limit (the page size) must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}; "
                "iteration fetches further pages on its own.",
                code="invalid_request",
            )
        params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return params


__all__ = [
    "check_id",
    "check_idempotency_key",
    "check_timeout",
    "describe_validation",
    "dump_model",
    "invalid_input",
    "list_params",
    "path_segment",
    "time_param",
    "validate_model",
]
