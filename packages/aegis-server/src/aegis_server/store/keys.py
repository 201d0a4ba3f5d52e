"""API keys: made (`aegis_sk_...`, only the SHA-256 stored), updated, authenticated in constant time,
listed and revoked; every change audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from aegis_server.key_actors import ANY_ACTOR, check_rate_limit, parse_actor_patterns
from aegis_server.store.database import Room
from aegis_server.store.records import SCOPES, ApiKey
from aegis_server.store.rows import api_key_from_row
from aegis_server.store.schema import api_keys

__all__ = ["API_KEY_PREFIX", "UNSET", "ApiKeys", "Unset", "hash_api_key"]

API_KEY_PREFIX = "aegis_sk_"
_MAX_PRESENTED_KEY = 512


class Unset:
    """The type of `UNSET`: an argument not given (as opposed to None, which sets NULL)."""


UNSET = Unset()


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key: what the store keeps instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys(Room):
    """The API keys of one database."""

    async def create_api_key(
        self,
        name: str,
        scopes: Sequence[str],
        actors: Sequence[str] | None = (ANY_ACTOR,),
        *,
        rate_limit_per_minute: int | None = None,
        by: str = "cli",
    ) -> tuple[str, ApiKey]:
        """Make a new key `aegis_sk_<43 url-safe chars>`; returns it (shown once) and its record.
        Only the key's SHA-256 is stored.

        `actors`: the actor patterns it may propose for (see `aegis_server.key_actors`). This Python API
        defaults to `*` (any actor) for tests and embedding; the CLI and the keys API make operators
        choose explicitly. None stores a key bound to no actor. `rate_limit_per_minute`: its own limit
        (None: the server-wide default; 0: none). `by`: who made it, for the audit (an API key id, or
        "cli")."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise ValueError("an API key needs a name of 1 to 200 characters, e.g. the service or person using it")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
        if not scopes:
            raise ValueError(f"an API key needs at least one scope; choose from {', '.join(SCOPES)}")
        patterns = tuple(parse_actor_patterns(actors)) if actors is not None else None
        check_rate_limit(rate_limit_per_minute)
        ordered = tuple(scope for scope in SCOPES if scope in set(scopes))
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._db.now()
        record = ApiKey(
            key_id=f"key_{secrets.token_hex(8)}",
            name=name,
            scopes=ordered,
            created_at=now,
            actors=patterns,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        stored_actors = list(patterns) if patterns is not None else None
        async with self._db.write() as conn:
            await conn.execute(
                sa.insert(api_keys).values(
                    key_id=record.key_id,
                    name=record.name,
                    key_hash=hash_api_key(key),
                    scopes=list(record.scopes),
                    created_at=now,
                    actors=stored_actors,
                    rate_limit_per_minute=rate_limit_per_minute,
                )
            )
            await self._db.audit(conn, now).append(
                "api_key_created",
                payload={
                    "key_id": record.key_id,
                    "name": name,
                    "scopes": list(ordered),
                    "actors": stored_actors,
                    "rate_limit_per_minute": rate_limit_per_minute,
                    "by": by,
                },
            )
        return key, record

    async def update_api_key(
        self,
        key_id: str,
        *,
        actors: Sequence[str] | Unset | None = UNSET,
        rate_limit_per_minute: int | Unset | None = UNSET,
        by: str = "cli",
    ) -> ApiKey | None:
        """Change an active key's actor patterns and/or its own rate limit (None: the server default);
        what is not given stays. Audited as "api_key_updated". None when no active key has this id."""
        values: dict[str, Any] = {}
        if not isinstance(actors, Unset):
            values["actors"] = list(parse_actor_patterns(actors)) if actors is not None else None
        if not isinstance(rate_limit_per_minute, Unset):
            values["rate_limit_per_minute"] = check_rate_limit(rate_limit_per_minute)
        now = self._db.now()
        async with self._db.write() as conn:
            active = sa.and_(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            if values:
                result = await conn.execute(sa.update(api_keys).where(active).values(**values))
                if result.rowcount != 1:
                    return None
                await self._db.audit(conn, now).append(
                    "api_key_updated", payload={"key_id": key_id, **values, "by": by}
                )
            row = (await conn.execute(sa.select(api_keys).where(active))).first()
        return api_key_from_row(row) if row is not None else None

    async def authenticate(self, presented_key: str) -> ApiKey | None:
        """The active key matching `presented_key`, or None (unknown, malformed or revoked)."""
        if not presented_key or len(presented_key) > _MAX_PRESENTED_KEY:
            return None
        digest = hash_api_key(presented_key)
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(api_keys).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        if row is None or not hmac.compare_digest(str(row.key_hash), digest):
            return None
        return api_key_from_row(row)

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        async with self._db.read() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id))).all()
        return [api_key_from_row(row) for row in rows]

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return api_key_from_row(row) if row is not None else None

    async def revoke_api_key(self, key_id: str, *, by: str = "cli") -> bool:
        """Revoke an active key; False when no active key has this id. `by`: who (an API key id or "cli")."""
        now = self._db.now()
        async with self._db.write() as conn:
            result = await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount != 1:
                return False
            await self._db.audit(conn, now).append("api_key_revoked", payload={"key_id": key_id, "by": by})
        return True

    async def count_unbound_api_keys(self) -> int:
        """How many active keys are bound to no actor (actors NULL: made before 0.2) though they may
        propose (`governance:propose` or `admin`): their proposals are refused until updated."""
        return sum(
            1
            for key in await self.list_api_keys()
            if key.revoked_at is None and not key.bound and key.has_scope("governance:propose")
        )

    async def count_api_keys(self) -> int:
        """How many keys are active (not revoked)."""
        async with self._db.read() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
            )
        return int(count or 0)
