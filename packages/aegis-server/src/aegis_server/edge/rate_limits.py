"""Per-key rate limits: a token bucket per API key in this process, or counters shared by every replica
in Redis (`AEGIS_REDIS_URL`, through the `limits` library) when one is configured.

A key without a limit of its own gets the server-wide one (`rate_limit_per_minute` sustained,
`rate_limit_burst` at once); a key with its own `N/min` gets N per minute with a burst of
`min(N, rate_limit_burst)`; 0 (server-wide or per key) means no limit.

In Redis the bucket is a moving window of `burst` requests per `burst / rate` seconds (rounded to whole
seconds): the same sustained rate and burst, counted by every replica together.

The app connects at start-up (`start()`, logging whether the counters are shared). Redis unreachable or
slow (more than `REDIS_TIMEOUT_SECONDS` once connected): this replica logs an ERROR and falls
back to its own in-memory buckets, retrying Redis after `REDIS_RETRY_SECONDS`. The limiter protects
the server's availability, not the integrity of a decision, so an outage of the counter store does not
stop governance (fail open to per-replica limits, which still hold each replica to the limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from aegis_server.errors import ApiError

logger = logging.getLogger("aegis_server.rate_limits")

REDIS_TIMEOUT_SECONDS = 0.5
"""How long one Redis round trip may take before this replica falls back to its in-memory buckets."""
REDIS_CONNECT_SECONDS = 5.0
"""How long the first Redis call (connection, server checks, scripts) may take, at start-up."""
REDIS_RETRY_SECONDS = 5.0
"""How long a replica keeps to its in-memory buckets after a Redis failure before trying Redis again."""
REDIS_KEY_PREFIX = "aegis-rate-limit"


def _limits_url(url: str) -> str:
    """`redis://…` as the `limits` library's async storage names it (`async+redis://…`)."""
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return "async+" + url


class RateLimiter:
    """Token buckets per API key (see the module docstring); `redis_url` shares them between replicas."""

    def __init__(
        self,
        rate_per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        redis_url: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate_per_second = rate_per_minute / 60.0
        self.burst = float(max(1, burst))
        self.clock = clock
        self._wall_clock = wall_clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._redis_url = redis_url
        self._redis: Any = None  # the limits library's strategy, made on first use (on the serving loop)
        self._redis_items: dict[tuple[float, float], Any] = {}
        self._redis_down_until = float("-inf")
        self._redis_failed = False

    @property
    def enabled(self) -> bool:
        return self.rate_per_second > 0

    @property
    def shared(self) -> bool:
        """True when the counters live in Redis (shared by every replica)."""
        return self._redis_url is not None

    async def start(self) -> None:
        """Connect to Redis (when configured) before the first request: the first call sets up the client
        and its scripts, which takes far longer than one round trip. Logs the outcome; never raises."""
        if self._redis_url is None:
            return
        try:
            strategy = self._strategy()
            await asyncio.wait_for(
                strategy.get_window_stats(self._item(1.0, 1.0), "aegis-start"), REDIS_CONNECT_SECONDS
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._count_alone(exc, "does not answer at start")
            return
        logger.info("rate limits: counters shared by every replica through Redis (AEGIS_REDIS_URL)")

    def _count_alone(self, exc: Exception, what: str) -> None:
        """Redis `what` (failed, ...): count in this replica's memory, and try Redis again in a while."""
        self._redis_down_until = self.clock() + REDIS_RETRY_SECONDS
        self._redis_failed = True
        logger.error(
            "rate limits: Redis (AEGIS_REDIS_URL) %s (%s); counting per replica in memory, retrying Redis in %.0f s",
            what,
            type(exc).__name__,
            REDIS_RETRY_SECONDS,
        )

    def limits_for(self, per_minute: int | None) -> tuple[float, float]:
        """(requests per second, burst) of a key with its own limit `per_minute` (None: server-wide)."""
        if per_minute is None:
            return self.rate_per_second, self.burst
        return per_minute / 60.0, float(max(1, min(per_minute, int(self.burst))))

    def acquire(self, key: str, per_minute: int | None = None) -> float | None:
        """Take one token for `key` from this process's bucket: None when allowed, else the seconds until
        one is available."""
        rate, burst = self.limits_for(per_minute)
        if rate <= 0:
            return None
        if per_minute is not None:
            key = f"{key}/{per_minute}"  # a changed limit starts a bucket of its own (as in Redis)
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    async def check(self, key: str, per_minute: int | None = None) -> None:
        """Raise the 429 envelope (with `Retry-After`) when `key` is over its limit."""
        rate, burst = self.limits_for(per_minute)
        if rate <= 0:
            return
        wait: float | None
        if self._redis_url is not None and self.clock() >= self._redis_down_until:
            try:
                strategy = self._strategy()  # made (its modules imported) outside the time limit
                wait = await asyncio.wait_for(self._acquire_shared(strategy, key, rate, burst), REDIS_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, timed out, refused: this replica counts alone for a while
                self._count_alone(exc, "failed")
                wait = self.acquire(key, per_minute)
            else:
                if self._redis_failed:
                    self._redis_failed = False
                    logger.warning("rate limits: Redis (AEGIS_REDIS_URL) answers again; counters are shared again")
        else:
            wait = self.acquire(key, per_minute)
        if wait is None:
            return
        retry_after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limit_error",
            "rate_limited",
            f"Too many requests for this API key. Retry after {retry_after} s (limit: {round(rate * 60)}/min, "
            f"burst {int(burst)}).",
            {"retry_after": retry_after},
            {"Retry-After": str(retry_after)},
        )

    def _strategy(self) -> Any:
        if self._redis is None:
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter

            assert self._redis_url is not None
            storage = RedisStorage(
                _limits_url(self._redis_url),
                wrap_exceptions=True,
                key_prefix=REDIS_KEY_PREFIX,
                connect_timeout=REDIS_CONNECT_SECONDS,
                stream_timeout=REDIS_CONNECT_SECONDS,
            )
            self._redis = MovingWindowRateLimiter(storage)
        return self._redis

    def _item(self, rate: float, burst: float) -> Any:
        item = self._redis_items.get((rate, burst))
        if item is None:
            from limits import RateLimitItemPerSecond

            window = max(1, math.ceil(burst / rate))
            item = RateLimitItemPerSecond(max(1, round(rate * window)), window)
            self._redis_items[(rate, burst)] = item
        return item

    async def _acquire_shared(self, strategy: Any, key: str, rate: float, burst: float) -> float | None:
        item = self._item(rate, burst)
        if await strategy.hit(item, key):
            return None
        stats = await strategy.get_window_stats(item, key)
        return max(0.0, float(stats.reset_time) - self._wall_clock())


__all__ = ["REDIS_CONNECT_SECONDS", "REDIS_RETRY_SECONDS", "REDIS_TIMEOUT_SECONDS", "RateLimiter"]
