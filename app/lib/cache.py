"""Redis caching with hit/miss counters (exported on /metrics through prometheus_client's registry).

`get`/`put`/`drop` keep a value under a key, which the caller validates itself (e.g. against a version
the database returns anyway, or a generation its writes bump).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError

from app.lib.leases import RELEASE

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


async def computed_once(
    redis, name: str, key: str, ttl_s: int, compute: Callable[[], Awaitable[bytes]], wait_s: float = 10.0
) -> bytes:
    """The cached bytes, or `compute()`'s, computed by one caller at a time (a Redis lock): the others
    wait for its value rather than all running the same expensive query at once (a cache stampede).
    Past `wait_s`, or without Redis, a caller computes it itself."""
    cached = await get(redis, name, key)
    if cached is not None:
        hit(name)
        return cached
    miss(name)
    lock, token = f"{PREFIX}lock:{key}", secrets.token_hex(8)
    try:
        holder = await redis.set(lock, token, nx=True, ex=max(int(wait_s * 3), 1))
    except (RedisError, OSError):
        holder = True
    if not holder:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            cached = await get(redis, name, key)
            if cached is not None:
                return cached
    try:
        value = await compute()
        await put(redis, key, value, ttl_s)
        return value
    finally:
        if holder:  # only its own lock: one that outlived it may be another caller's by now
            with contextlib.suppress(RedisError, OSError):
                await redis.eval(RELEASE, 1, lock, token)
