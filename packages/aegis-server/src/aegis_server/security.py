"""API-key authentication, scopes and actor binding.

`Authorization: Bearer aegis_sk_…`; keys are stored hashed by the store. Missing or unknown key → 401,
a key over its rate limit → 429, a key without the route's scope → 403. `admin` implies every scope.

A key is bound to the actors it may propose for: a list of patterns, each a glob over `actor.id`
(`support-bot-*`) or `type:id-glob` (`ai-agent:support-bot-*`; `*:glob` matches any type, and is how an
id holding a `:` is written). Globs use `fnmatch.fnmatchcase` (exact case). `*` allows any actor; a key
whose list is NULL (made before 0.2) or empty is bound to no actor.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from aegis_server.errors import ApiError
from aegis_server.key_actors import ACTOR_TYPES, ANY_ACTOR, ActorBinding, parse_actor_patterns

if TYPE_CHECKING:
    from aegis_server.edge.rate_limits import RateLimiter

SCOPE_PROPOSE = "governance:propose"
SCOPE_READ = "governance:read"
SCOPE_REVIEW = "governance:review"
SCOPE_AUDIT = "audit:read"
SCOPE_POLICIES = "policies:manage"
SCOPE_METRICS = "metrics"
SCOPE_ADMIN = "admin"
SCOPES: tuple[str, ...] = (
    SCOPE_PROPOSE,
    SCOPE_READ,
    SCOPE_REVIEW,
    SCOPE_AUDIT,
    SCOPE_POLICIES,
    SCOPE_METRICS,
    SCOPE_ADMIN,
)
KEY_PREFIX = "aegis_sk_"
ANY_ACTOR_BINDING = ActorBinding((ANY_ACTOR,))


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an API key (never the key itself)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    actors: ActorBinding = ANY_ACTOR_BINDING
    rate_limit_per_minute: int | None = None

    def has_scope(self, scope: str) -> bool:
        return SCOPE_ADMIN in self.scopes or scope in self.scopes


def parse_scopes(text: str | Sequence[str]) -> list[str]:
    """Split and check scopes (`a,b` or a list); raises ValueError naming an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = [s.strip() for s in items if s.strip()]
    if not scopes:
        raise ValueError(f"give at least one scope; known scopes: {', '.join(SCOPES)}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; known scopes: {', '.join(SCOPES)}")
    return list(dict.fromkeys(scopes))


Authenticate = Callable[[str], Any]
"""`async (presented_key) -> ApiKey | None` — the store's `authenticate`."""


class KeyAuthenticator:
    """Verifies presented keys against the store, with a short positive cache (`auth_cache_seconds`)."""

    def __init__(
        self, authenticate: Authenticate, cache_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._authenticate = authenticate
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(self, presented: str) -> Principal | None:
        if not presented.startswith(KEY_PREFIX) or len(presented) > 256:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        if self._cache_seconds <= 0:
            return await self._lookup(presented, digest)  # no cache: every request checks the store itself
        # One store lookup per key at a time: when the cache entry of a busy key expires, the requests in
        # flight with it wait for that lookup (no staler than the cache) instead of each opening a
        # database connection.
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.ensure_future(self._lookup(presented, digest))
            lookup.add_done_callback(lambda _done: self._lookups.pop(digest, None))
        return await asyncio.shield(lookup)

    async def _lookup(self, presented: str, digest: str) -> Principal | None:
        now = self._clock()
        api_key = await self._authenticate(presented)
        if api_key is None:
            self._cache.pop(digest, None)
            return None
        actors = api_key.actors
        principal = Principal(
            key_id=str(api_key.key_id),
            name=str(api_key.name),
            scopes=frozenset(api_key.scopes),
            actors=ActorBinding(tuple(actors) if actors is not None else None),
            rate_limit_per_minute=api_key.rate_limit_per_minute,
        )
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._cache_seconds)
        return principal

    def forget_all(self) -> None:
        """Drop every cached key: a key revoked or changed on this replica takes effect at once (other
        replicas see it within `auth_cache_seconds`)."""
        self._cache.clear()


_bearer = HTTPBearer(auto_error=False, description="An AEGIS API key: `Authorization: Bearer aegis_sk_…`.")


class RequireScope:
    """A FastAPI dependency: `Depends(RequireScope("governance:read"))` → the Principal."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return await self.authorize(request, credentials.credentials if credentials is not None else None)

    async def authorize(self, request: Request, presented: str | None) -> Principal:
        """The principal of the presented key, checked for this scope and the key's rate limit; raises the
        401 / 429 / 403 envelope. Also sets `request.state.principal`."""
        state = request.app.state
        authenticator: KeyAuthenticator = state.authenticator
        limiter: RateLimiter = state.rate_limiter
        if not presented:
            raise ApiError(
                401,
                "authentication_error",
                "missing_api_key",
                "No API key. Send `Authorization: Bearer aegis_sk_…` (create a key with `aegis-server keys create`).",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = await authenticator.principal(presented)
        if principal is None:
            raise ApiError(
                401,
                "authentication_error",
                "invalid_api_key",
                "The API key is unknown or revoked. Check AEGIS_API_KEY, or create a key with "
                "`aegis-server keys create`.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        await limiter.check(principal.key_id, principal.rate_limit_per_minute)
        if not principal.has_scope(self.scope):
            raise ApiError(
                403,
                "permission_error",
                "missing_scope",
                f"The API key {principal.name!r} lacks the scope {self.scope!r} this route needs. Use a key "
                f"that has it (or `admin`).",
                {"required_scope": self.scope},
            )
        request.state.principal = principal
        return principal


def bearer_credentials(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, read as FastAPI's `HTTPBearer` reads it (None
    when the header is missing, empty or of another scheme)."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


__all__ = [
    "ACTOR_TYPES",
    "ANY_ACTOR",
    "KEY_PREFIX",
    "SCOPES",
    "SCOPE_ADMIN",
    "SCOPE_AUDIT",
    "SCOPE_METRICS",
    "SCOPE_POLICIES",
    "SCOPE_PROPOSE",
    "SCOPE_READ",
    "SCOPE_REVIEW",
    "ActorBinding",
    "KeyAuthenticator",
    "Principal",
    "RequireScope",
    "bearer_credentials",
    "parse_actor_patterns",
    "parse_scopes",
]
