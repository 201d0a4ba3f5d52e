"""KeyAuthenticator: concurrent requests with one key share one store lookup when the cache is on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aegis_server.security import KeyAuthenticator

KEY = "aegis_sk_" + "k" * 43


class _Store:
    def __init__(self, known: bool = True) -> None:
        self.calls = 0
        self.known = known
        self.release = asyncio.Event()

    async def authenticate(self, presented: str) -> Any:
        self.calls += 1
        await self.release.wait()
        if not self.known:
            return None
        return SimpleNamespace(
            key_id="key_1", name="agent", scopes=["governance:propose"], actors=("*",), rate_limit_per_minute=None
        )


async def _concurrently(auth: KeyAuthenticator, store: _Store, n: int) -> list[Any]:
    tasks = [asyncio.create_task(auth.principal(KEY)) for _ in range(n)]
    await asyncio.sleep(0)
    store.release.set()
    return await asyncio.gather(*tasks)


async def test_concurrent_misses_share_one_lookup() -> None:
    store = _Store()
    auth = KeyAuthenticator(store.authenticate, cache_seconds=2.0, clock=lambda: 100.0)
    principals = await _concurrently(auth, store, 20)
    assert store.calls == 1
    assert {p.key_id for p in principals} == {"key_1"}
    assert await auth.principal(KEY) is principals[0]  # cached now
    assert store.calls == 1


async def test_unknown_key_is_refused_for_every_waiter_and_not_cached() -> None:
    store = _Store(known=False)
    auth = KeyAuthenticator(store.authenticate, cache_seconds=2.0, clock=lambda: 100.0)
    assert await _concurrently(auth, store, 5) == [None] * 5
    assert store.calls == 1
    assert await auth.principal(KEY) is None
    assert store.calls == 2


async def test_without_cache_every_request_checks_the_store() -> None:
    store = _Store()
    auth = KeyAuthenticator(store.authenticate, cache_seconds=0.0, clock=lambda: 100.0)
    await _concurrently(auth, store, 4)
    assert store.calls == 4


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    store = _Store()
    auth = KeyAuthenticator(store.authenticate, cache_seconds=2.0, clock=lambda: 100.0)
    first = asyncio.create_task(auth.principal(KEY))
    second = asyncio.create_task(auth.principal(KEY))
    await asyncio.sleep(0)
    first.cancel()
    store.release.set()
    principal = await second
    assert principal is not None and principal.key_id == "key_1"
    assert store.calls == 1
