"""What a governed request carries: its path and query parameters and its body, as the endpoint sees them.

The dependency runs before FastAPI validates the endpoint's own inputs, so it validates them itself with
FastAPI's functions (`request_params_to_args`, `request_body_to_args`, `APIRoute._embed_body_fields`),
which are not public API: pyproject.toml bounds the FastAPI range, and scripts/test_sdk_pythons.sh runs
the tests on its lowest and newest version. Widen the bound only after that script passed."""

from __future__ import annotations

import dataclasses
import email.message
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from pydantic_core import PydanticUndefined
from starlette.datastructures import QueryParams, UploadFile
from starlette.requests import Request


class ParameterConflict(ValueError):
    """One name arrives in two places (path, query, body) with different values."""

    def __init__(self, name: str, places: tuple[str, str]) -> None:
        super().__init__(
            f"Parameter {name!r} arrives in the {places[0]} and in the {places[1]} with different values; "
            "governance needs one value per name. Send it in one place, or build the parameters yourself "
            "with parameters=."
        )
        self.name = name


@dataclasses.dataclass(frozen=True)
class RouteInputs:
    """The inputs of one governed request, passed to `capability=` and `parameters=` callables.

    `path_params` and `query_params` are the values the endpoint receives (validated and converted by
    FastAPI for the dependency; as sent, with repeated query names as lists, for the middleware); `body`
    is the JSON-ready request body: a model's fields, or `{name: value}` for several body parameters.
    Values that are None are left out. `route` is the route's path template (e.g. `/orders/{order_id}`)."""

    request: Request
    route: str
    path_params: dict[str, Any]
    query_params: dict[str, Any]
    body: dict[str, Any]

    def default_parameters(self) -> dict[str, Any]:
        """Path, query and body parameters merged into one object (the default governance parameters).
        Raises ParameterConflict when a name appears twice with different values."""
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for place, values in (("path", self.path_params), ("query", self.query_params), ("body", self.body)):
            for name, value in values.items():
                if name in merged and merged[name] != value:
                    raise ParameterConflict(name, (origin[name], place))
                merged[name] = value
                origin.setdefault(name, place)
        return merged


def _upload(file: UploadFile) -> dict[str, Any]:
    return {"filename": file.filename, "content_type": file.content_type, "size": file.size}


def to_jsonable(value: Any) -> Any:
    """JSON-ready form of a validated value (models, dates, enums...); None fields are left out and an
    uploaded file becomes its name, type and size."""
    return jsonable_encoder(value, exclude_none=True, custom_encoder={UploadFile: _upload})


def _collect(dependant: Dependant, fields: dict[str, dict[str, Any]], skip: Collection[Any]) -> None:
    for kind in ("path_params", "query_params", "body_params"):
        for field in getattr(dependant, kind):
            fields[kind].setdefault(field.name, field)
    for sub in dependant.dependencies:
        # The inputs of the actor / context dependencies and of security schemes are credentials and
        # plumbing, not the action: an API key in a query parameter must never become a parameter.
        if sub.call in skip or isinstance(sub.call, SecurityBase):
            continue
        _collect(sub, fields, skip)


async def _received_body(request: Request, route: APIRoute) -> Any:
    """The body as FastAPI handed it to validation (already read and cached by FastAPI)."""
    body_field = route.body_field
    if body_field is not None and isinstance(body_field.field_info, params.Form):
        return await request.form()
    raw = await request.body()
    if not raw:
        return PydanticUndefined
    content_type = request.headers.get("content-type")
    if not content_type:
        return await request.json()
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() == "application":
        subtype = message.get_content_subtype()
        if subtype == "json" or subtype.endswith("+json"):
            return await request.json()
    return raw


def flat_query(query: QueryParams) -> dict[str, Any]:
    """The query parameters as sent, a repeated name as a list of its values."""
    out: dict[str, Any] = {}
    for key in query:
        values = query.getlist(key)
        out[key] = values[0] if len(values) == 1 else values
    return out


async def endpoint_inputs(request: Request, skip: Collection[Any] = (), served: Any = None) -> RouteInputs:
    """Validate the request's path, query and body against the matched route, as FastAPI will for the
    endpoint, so governance sees exactly the endpoint's inputs (those of the dependencies in `skip`, and of
    security schemes, excepted). Invalid input raises FastAPI's own RequestValidationError (422) before
    anything is proposed. `served` is the route as FastAPI serves it when that is not `scope["route"]`
    itself (an included router's route, with its prefix and router-level dependencies: `_routes`)."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and served is not None:
        route = served
    elif not isinstance(route, APIRoute):
        return RouteInputs(
            request=request,
            route=request.url.path,
            path_params=to_jsonable(dict(request.path_params)),
            query_params=flat_query(request.query_params),
            body={},
        )
    fields: dict[str, dict[str, Any]] = {"path_params": {}, "query_params": {}, "body_params": {}}
    _collect(route.dependant, fields, skip)
    path_values, errors = request_params_to_args(list(fields["path_params"].values()), request.path_params)
    query_values, query_errors = request_params_to_args(list(fields["query_params"].values()), request.query_params)
    errors = list(errors) + list(query_errors)
    body: dict[str, Any] = {}
    received: Any = None
    body_fields = list(fields["body_params"].values())
    if body_fields:
        received = await _received_body(request, route)
        embed = bool(getattr(route, "_embed_body_fields", len(body_fields) > 1))
        body_values, body_errors = await request_body_to_args(
            body_fields=body_fields, received_body=received, embed_body_fields=embed
        )
        errors.extend(body_errors)
        if not body_errors:
            body = _body_parameters(body_values, single=len(body_fields) == 1 and not embed)
    if errors:
        raise RequestValidationError(errors, body=None if received is PydanticUndefined else received)
    return RouteInputs(
        request=request,
        route=route.path,
        path_params=_without_none(to_jsonable(path_values)),
        query_params=_without_none(to_jsonable(query_values)),
        body=body,
    )


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _body_parameters(values: Mapping[str, Any], *, single: bool) -> dict[str, Any]:
    if single:
        ((name, value),) = values.items()
        if value is None:
            return {}
        encoded = to_jsonable(value)
        return encoded if isinstance(encoded, dict) else {name: encoded}
    return _without_none(to_jsonable(dict(values)))


__all__ = ["ParameterConflict", "RouteInputs", "endpoint_inputs", "flat_query", "to_jsonable"]
