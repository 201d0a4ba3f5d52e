"""Reading the platform's answers into models.

A body that is not JSON, or not the expected shape, raises `MalformedResponseError` naming the endpoint and
the problem (never the body's values). Models that forbid unknown fields as requests tolerate them as
answers, so a newer platform may add fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pydantic
from pydantic import BaseModel, TypeAdapter

from aegis_sdk._validation import describe_validation
from aegis_sdk._version import __version__
from aegis_sdk.errors import AegisError, MalformedResponseError
from aegis_sdk.models import OUTCOMES, Decision, Health

M = TypeVar("M", bound=BaseModel)

DECISION_ADAPTER: TypeAdapter[Decision] = TypeAdapter(Decision)


def request_id(response: httpx.Response) -> str | None:
    """The platform's `X-Request-ID` of an answer."""
    value: str | None = response.headers.get("x-request-id")
    return value


def where(response: httpx.Response) -> str:
    """`METHOD /path` of the request an answer belongs to, for messages."""
    request = response.request
    return f"{request.method} {request.url.path}"


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type")
        raise _unreadable(
            response,
            f"answered HTTP {response.status_code} with a body that is not JSON ({kind}, {len(response.content)} "
            "bytes); is the endpoint an AEGIS platform?",
        ) from None


def _unreadable(response: httpx.Response, problem: str, code: str = "malformed_response") -> AegisError:
    """MalformedResponseError for an answer: `problem` follows `METHOD /path`."""
    return MalformedResponseError(
        f"{where(response)} {problem}", status_code=response.status_code, code=code, request_id=request_id(response)
    )


def malformed(response: httpx.Response, what: str, problem: str) -> AegisError:
    return _unreadable(response, f"answered with a malformed {what}: {problem}.")


def decision_from(obj: object, response: httpx.Response) -> Decision:
    if not isinstance(obj, dict):
        raise malformed(response, "decision", f"expected a JSON object, got {type(obj).__name__}")
    outcome = obj.get("outcome")
    if isinstance(outcome, str) and outcome not in OUTCOMES:
        raise _unreadable(
            response,
            f"answered with outcome {outcome[:40]!r}, which aegis-sdk {__version__} does not know "
            f"(known: {', '.join(OUTCOMES)}); upgrade aegis-sdk. Treat the action as not allowed.",
            code="unknown_outcome",
        )
    try:
        return DECISION_ADAPTER.validate_python(obj)
    except pydantic.ValidationError as exc:
        text, _ = describe_validation(exc)
        raise malformed(response, "decision", text) from None


def parse_decision(response: httpx.Response) -> Decision:
    return decision_from(json_body(response), response)


def model_from(model: type[M], obj: object, response: httpx.Response) -> M:
    if isinstance(obj, dict) and model.model_config.get("extra") == "forbid":
        # Request models double as answers: tolerate fields a newer platform adds.
        obj = {key: value for key, value in obj.items() if key in model.model_fields}
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        text, _ = describe_validation(exc)
        raise malformed(response, model.__name__, text) from None


def model_parser(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return model_from(model, json_body(response), response)

    return parse


def items_of(body: object, response: httpx.Response, what: str) -> list[Any]:
    """A listing answer: a bare JSON array or an object with `items`."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        items: list[Any] = body["items"]
        return items
    raise malformed(response, what, "expected a JSON array or an object with an `items` array")


def list_parser(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    def parse(response: httpx.Response) -> list[M]:
        return [model_from(model, item, response) for item in items_of(json_body(response), response, model.__name__)]

    return parse


def parse_nothing(response: httpx.Response) -> None:
    return None


def parse_health_report(response: httpx.Response) -> Health:
    """A health report, also when it comes with 503 (not ready); an error envelope is not one."""
    body = json_body(response)
    if isinstance(body, dict) and "error" in body:
        raise malformed(response, "health report", "got an error envelope")
    return model_from(Health, body, response)


__all__ = [
    "DECISION_ADAPTER",
    "decision_from",
    "items_of",
    "json_body",
    "list_parser",
    "malformed",
    "model_from",
    "model_parser",
    "parse_decision",
    "parse_health_report",
    "parse_nothing",
    "request_id",
    "where",
]
