"""Redis caching with hit/miss counters (exported on /metrics through prometheus_client's registry).

`get`/`put`/`drop` keep a value under a key, which the caller validates itself (e.g. against a version
the database returns anyway, or a generation its writes bump).
"""

from __future__ import annotations

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
