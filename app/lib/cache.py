"""Redis caching with hit/miss counters (exported on /metrics through prometheus_client's registry).

Two shapes:
- `get`/`put`/`drop`: a value under a key, which the caller validates itself (e.g. against a version
  the database returns anyway);
- `Generational`: a value tagged with a generation counter that every relevant write bumps after it
  commits. A reader accepts a value only when its tag is the current generation, so a slow reader that
  stores a result computed before a write can never serve it after that write (no stale reads of one's
  own writes, even under races).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

CACHE_HITS = Counter("dynamicvault_cache_hits_total", "Cache reads answered from Redis", ["cache"])
CACHE_MISSES = Counter("dynamicvault_cache_misses_total", "Cache reads that fell through", ["cache"])
PREFIX = "cache:"


def hit(name: str) -> None:
    CACHE_HITS.labels(name).inc()


def miss(name: str) -> None:
    CACHE_MISSES.labels(name).inc()


async def get(redis, name: str, key: str) -> bytes | None:
    """The cached bytes, or None; a Redis failure is a miss (the cache is never a dependency)."""
    try:
        return await redis.get(PREFIX + key)
    except (RedisError, OSError) as exc:
        log.warning("cache.get_failed", cache=name, error=str(exc))
        return None


async def put(redis, key: str, value: bytes, ttl_s: int) -> None:
    try:
        await redis.set(PREFIX + key, value, ex=ttl_s)
    except (RedisError, OSError) as exc:
        log.warning("cache.put_failed", key=key, error=str(exc))


async def drop(redis, *keys: str) -> None:
    if keys:
        await redis.delete(*(PREFIX + key for key in keys))


class Generational:
    """Values tagged with a generation; `bump()` after a write invalidates all of them at once."""

    def __init__(self, name: str, ttl_s: int) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self.generation_key = f"{PREFIX}{name}:generation"

    async def get_or_compute(self, redis, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        full_key = f"{PREFIX}{self.name}:{key}"
        try:
            generation, stored = await redis.mget(self.generation_key, full_key)
        except (RedisError, OSError) as exc:
            log.warning("cache.get_failed", cache=self.name, error=str(exc))
            miss(self.name)
            return await compute()
        generation = generation or b"0"
        if stored is not None:
            tag, _, body = stored.partition(b"|")
            if tag == generation:
                hit(self.name)
                return body
        miss(self.name)
        body = await compute()
        try:
            await redis.set(full_key, generation + b"|" + body, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("cache.put_failed", cache=self.name, error=str(exc))
        return body

    async def bump(self, redis) -> None:
        """Invalidate every value of this cache; call it after the write has committed."""
        await redis.incr(self.generation_key)
