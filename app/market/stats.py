"""Market stats: figures from MongoDB aggregations, cached in Redis and recomputed one request at a time.

The stats are cached as `generation|computedAt|body`. They are fresh while their generation is current
and for STATS_FRESH_S at most, as the windows slide. The generation is the market's own (bumped by the
writes that change the sales: `invalidate`) with the assets' catalog generation (bumped when an asset
is added), read in one MGET. One request at a time recomputes them (under STATS_LOCK_KEY); the others
meanwhile serve the last value, which is kept for STATS_KEEP_S whatever its generation, or on a cold
cache wait for the first one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError

from app.assets import service as assets_service
from app.config import Settings
from app.lib import cache
from app.lib.money import wei_string
from app.lib.params import bounded_query
from app.lib.schemas import encode_json
from app.lib.timeutil import utcnow
from app.market import repository, schemas

log = structlog.get_logger(__name__)

STATS_CACHE = "market_stats"
STATS_GENERATION_KEY = f"{cache.PREFIX}market_stats:generation"
STATS_KEY = f"{cache.PREFIX}market_stats:last"
STATS_LOCK_KEY = f"{cache.PREFIX}market_stats:lock"
STATS_FRESH_S = 60
STATS_KEEP_S = 3600
STATS_POLL_S = 0.05
# KEYS: the lock; ARGV: the holder's token. Deletes the lock only if this holder still has it.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
WINDOWS = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


async def invalidate(redis) -> None:
    """The cached figures are recomputed on the next read."""
    await redis.incr(STATS_GENERATION_KEY)


def _change(current: float, previous: float) -> float | None:
    if not previous:
        return None
    return round((current - previous) / previous * 100, 2)


def _volume(totals: dict[str, Any]) -> schemas.VolumeWindows:
    figures = {}
    for name in WINDOWS:
        volume, previous = totals.get(f"{name}volume", 0.0), totals.get(f"prev{name}volume", 0.0)
        sales, previous_sales = totals.get(f"{name}sales", 0), totals.get(f"prev{name}sales", 0)
        figures[name] = schemas.VolumeWindow(
            volume=round(volume, 9),
            volumeWei=wei_string(totals.get(f"{name}wei")) or "0",
            salesCount=sales,
            previousVolume=round(previous, 9),
            previousVolumeWei=wei_string(totals.get(f"prev{name}wei")) or "0",
            previousSalesCount=previous_sales,
            volumeChangePct=_change(volume, previous),
            salesChangePct=_change(sales, previous_sales),
        )
    return schemas.VolumeWindows(day=figures["24h"], week=figures["7d"], month=figures["30d"])


async def compute_stats(settings: Settings) -> bytes:
    """The figures now, as the JSON of schemas.MarketStats."""
    now = utcnow()
    async with bounded_query():
        catalog = await assets_service.catalog_figures(settings.mongodb.max_time_ms)
        sales = await repository.sales_totals(now, WINDOWS, schemas.SALE_TYPES, settings.mongodb.max_time_ms)
    by_type = [schemas.TypePrices(**msgspec.structs.asdict(row)) for row in catalog.byType]
    body = schemas.MarketStats(
        generatedAt=now,
        totalAssets=sum(row.count for row in by_type),
        listedCount=sum(row.listedCount for row in by_type),
        uniqueOwners=catalog.uniqueOwners,
        assetsByType={row.assetType: row.count for row in by_type},
        priceByType=by_type,
        volume=_volume(sales),
    )
    return encode_json(body)


class _CachedStats(msgspec.Struct, frozen=True):
    generation: bytes
    computed_at: float
    body: bytes

    @classmethod
    def parse(cls, stored: bytes | None) -> _CachedStats | None:
        parts = stored.split(b"|", 2) if stored else []
        if len(parts) != 3:
            return None
        try:
            return cls(parts[0], float(parts[1]), parts[2])
        except ValueError:
            return None

    def fresh(self, generation: bytes) -> bool:
        return self.generation == generation and time.time() - self.computed_at < STATS_FRESH_S


async def market_stats(clients, settings: Settings) -> bytes:
    """The market figures as JSON: cached until a write changes them, recomputed by one request at a time."""
    redis = clients.redis
    # The aggregation is two queries, each bounded by maxTimeMS: a lock outliving that has lost its holder.
    lock_ms = 2 * settings.mongodb.max_time_ms + 1000
    give_up = time.monotonic() + lock_ms / 1000
    while True:
        token = secrets.token_hex(16)
        try:
            generation, last = await _read_stats(redis)
            if last is not None and last.fresh(generation):
                cache.hit(STATS_CACHE)
                return last.body
            locked = await redis.set(STATS_LOCK_KEY, token, nx=True, px=lock_ms)
        except (RedisError, OSError) as exc:
            log.warning("cache.get_failed", cache=STATS_CACHE, error=str(exc))
            cache.miss(STATS_CACHE)
            return await compute_stats(settings)
        if locked:
            try:
                return await _recompute_stats(redis, settings)
            finally:
                await _unlock_stats(redis, token)
        if last is not None:  # another request is recomputing: the previous figures meanwhile
            cache.hit(STATS_CACHE)
            return last.body
        if time.monotonic() >= give_up:
            cache.miss(STATS_CACHE)
            return await compute_stats(settings)
        await asyncio.sleep(STATS_POLL_S)  # a cold cache: the first figures are on their way


async def _read_stats(redis) -> tuple[bytes, _CachedStats | None]:
    """The current generation (market's and catalog's) and the cached figures, in one round trip."""
    own, catalog, stored = await redis.mget(
        STATS_GENERATION_KEY, assets_service.CATALOG_GENERATION_KEY, STATS_KEY
    )
    return b"%s.%s" % (own or b"0", catalog or b"0"), _CachedStats.parse(stored)


async def _recompute_stats(redis, settings: Settings) -> bytes:
    """Under the lock: the figures the previous holder stored since our last read, else new ones."""
    try:
        generation, last = await _read_stats(redis)
    except (RedisError, OSError) as exc:
        log.warning("cache.get_failed", cache=STATS_CACHE, error=str(exc))
        generation, last = b"0.0", None
    if last is not None and last.fresh(generation):
        cache.hit(STATS_CACHE)
        return last.body
    cache.miss(STATS_CACHE)
    computed_at = time.time()
    body = await compute_stats(settings)
    # Tagged with the generation read before the aggregation: a write during it leaves these stale.
    try:
        await redis.set(STATS_KEY, b"%s|%f|%s" % (generation, computed_at, body), ex=STATS_KEEP_S)
    except (RedisError, OSError) as exc:
        log.warning("cache.put_failed", cache=STATS_CACHE, error=str(exc))
    return body


async def _unlock_stats(redis, token: str) -> None:
    try:
        await redis.register_script(UNLOCK_LUA)(keys=[STATS_LOCK_KEY], args=[token])
    except (RedisError, OSError) as exc:
        log.warning("market.stats.unlock_failed", error=str(exc))  # the lock expires on its own
