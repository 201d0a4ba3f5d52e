"""One `httpx.AsyncClient` per event loop, for an `AsyncAegisClient` that owns its pool.

An httpx connection belongs to the event loop that opened it: reused from another loop it fails with
`RuntimeError: Event loop is closed` (or hangs on a loop that is still alive in another thread). A client
created once at module level meets many loops: each `asyncio.run`, each Starlette `TestClient` (whose
portal runs its own loop in a thread), each pytest-asyncio test. So each loop gets its own pool, created
on first use there; pools of loops that have closed are dropped, and `aclose()` closes the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import httpx

logger = logging.getLogger("aegis_sdk")


class LoopClients:
    """The pool of each event loop. The first loop that sends gets `first()` (the client's own `_http`,
    read then); every other loop gets `make()`."""

    def __init__(self, first: Callable[[], httpx.AsyncClient], make: Callable[[], httpx.AsyncClient]) -> None:
        self._first: Callable[[], httpx.AsyncClient] | None = first
        self._make = make
        self._lock = threading.Lock()
        self._pools: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._last: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def current(self) -> httpx.AsyncClient:
        """The pool of the running loop (created on its first use)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        with self._lock:
            pool = self._pools.get(loop)
            if pool is None:
                self._drop_closed_loops()
                pool = self._first() if self._first is not None else self._make()
                self._first = None
                self._pools[loop] = pool
                if len(self._pools) > 1:
                    logger.debug("AsyncAegisClient used from another event loop: %d pools", len(self._pools))
            self._last = (loop, pool)
            return pool

    def _drop_closed_loops(self) -> None:
        # A closed loop cannot run its pool's `aclose()`; its sockets close when the pool is collected.
        for loop in [loop for loop in self._pools if loop.is_closed()]:
            del self._pools[loop]
        if self._last is not None and self._last[0].is_closed():
            self._last = None

    async def aclose(self) -> None:
        """Close the running loop's pool and those of loops still alive in other threads."""
        running = asyncio.get_running_loop()
        with self._lock:
            pools = list(self._pools.items())
            self._pools.clear()
            self._last = None
        for loop, pool in pools:
            if loop is running:
                await pool.aclose()
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(pool.aclose(), loop)


__all__ = ["LoopClients"]
