"""`/api/v1/keys`: API keys — create (the key shown once), list, get, change actors or rate limit, revoke.

Scope `admin`. Never answers a key or its hash. A change takes effect on this replica at once (its
authentication cache is dropped) and on the others within `auth_cache_seconds`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from aegis_sdk.models import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, ApiKeyList, ApiKeyUpdate
from aegis_server.api.common import BODY_ERRORS, Admin, errors
from aegis_server.errors import ApiError, not_found, validation_error
from aegis_server.key_actors import parse_actor_patterns
from aegis_server.security import SCOPE_ADMIN, SCOPE_PROPOSE, KeyAuthenticator, parse_scopes
from aegis_server.store import UNSET, ApiKey, Store, format_timestamp

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


def _store(request: Request) -> Store:
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        raise ApiError(503, "server_error", "unavailable", "The server is starting; retry shortly.")
    return store


StoreDep = Annotated[Store, Depends(_store)]


def _forget_cached_keys(request: Request) -> None:
    authenticator: KeyAuthenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is not None:
        authenticator.forget_all()


def _info(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "actors": list(key.actors) if key.actors is not None else None,
        "bound": key.bound,
        "rate_limit_per_minute": key.rate_limit_per_minute,
        "status": "revoked" if key.revoked_at is not None else "active",
        "created_at": format_timestamp(key.created_at),
        "revoked_at": format_timestamp(key.revoked_at) if key.revoked_at is not None else None,
    }


def _invalid(field: str, exc: ValueError) -> ApiError:
    return validation_error(422, "invalid_request", f"{field}: {exc}", {"field": field})


def _actors(actors: list[str]) -> list[str]:
    try:
        return parse_actor_patterns(actors)
    except ValueError as exc:
        raise _invalid("actors", exc) from None


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=201,
    summary="Create an API key (the key is in this answer only)",
    description=(
        "`actors` is required for a key with `governance:propose` or `admin`: globs over `actor.id`, optionally "
        "`type:id-glob` (e.g. `ai-agent:support-bot-*`), or `*` for any actor. `rate_limit_per_minute`: the "
        "key's own limit (null: the server-wide one; 0: none)."
    ),
    responses=errors(*BODY_ERRORS),
)
async def create_key(body: ApiKeyCreate, store: StoreDep, principal: Admin) -> dict[str, Any]:
    try:
        scopes = parse_scopes(body.scopes)
    except ValueError as exc:
        raise _invalid("scopes", exc) from None
    if body.actors is None and (SCOPE_PROPOSE in scopes or SCOPE_ADMIN in scopes):
        raise validation_error(
            422,
            "invalid_request",
            f"actors: a key with {SCOPE_PROPOSE} or {SCOPE_ADMIN} must say which actors it may propose for; send "
            'e.g. "actors": ["ai-agent:support-bot-*"], or ["*"] for any actor.',
            {"field": "actors"},
        )
    actors = _actors(body.actors) if body.actors is not None else None
    try:
        key, record = await store.create_api_key(
            body.name, scopes, actors, rate_limit_per_minute=body.rate_limit_per_minute, by=principal.key_id
        )
    except ValueError as exc:
        raise _invalid("name", exc) from None
    return {**_info(record), "api_key": key}


@router.get("", response_model=ApiKeyList, summary="List API keys (never the keys)", responses=errors())
async def list_keys(store: StoreDep, _: Admin) -> dict[str, Any]:
    return {"items": [_info(key) for key in await store.list_api_keys()]}


@router.get("/{key_id}", response_model=ApiKeyInfo, summary="Get one API key (never the key)", responses=errors(404))
async def get_key(key_id: str, store: StoreDep, _: Admin) -> dict[str, Any]:
    key = await store.get_api_key(key_id)
    if key is None:
        raise not_found("API key", key_id)
    return _info(key)


@router.patch(
    "/{key_id}",
    response_model=ApiKeyInfo,
    summary="Change an API key's actors or rate limit",
    description="Only the fields sent change. `rate_limit_per_minute: null` returns the key to the server-wide "
    "limit. A revoked key cannot be changed (404).",
    responses=errors(404, *BODY_ERRORS),
)
async def update_key(
    key_id: str, body: ApiKeyUpdate, request: Request, store: StoreDep, principal: Admin
) -> dict[str, Any]:
    sent = body.model_fields_set
    if not sent & {"actors", "rate_limit_per_minute"}:
        raise validation_error(
            422,
            "invalid_request",
            'Nothing to change: send "actors" and/or "rate_limit_per_minute".',
            {"field": "(root)"},
        )
    if "actors" in sent and body.actors is None:
        raise validation_error(
            422,
            "invalid_request",
            'actors: send a list of patterns, e.g. ["ai-agent:support-bot-*"], or ["*"] for any actor '
            "(revoke a key that should propose for no actor).",
            {"field": "actors"},
        )
    key = await store.update_api_key(
        key_id,
        actors=_actors(body.actors) if body.actors is not None else UNSET,
        rate_limit_per_minute=body.rate_limit_per_minute if "rate_limit_per_minute" in sent else UNSET,
        by=principal.key_id,
    )
    if key is None:
        raise not_found("API key", key_id)
    _forget_cached_keys(request)
    return _info(key)


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key",
    description="The key stops working at once on this replica, within `auth_cache_seconds` on the others. "
    "An unknown or already revoked key → 404.",
    responses=errors(404),
)
async def revoke_key(key_id: str, request: Request, store: StoreDep, principal: Admin) -> Response:
    if not await store.revoke_api_key(key_id, by=principal.key_id):
        raise not_found("API key", key_id)
    _forget_cached_keys(request)
    return Response(status_code=204)


__all__ = ["router"]
