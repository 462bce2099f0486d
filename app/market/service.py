"""Transactions and market aggregates. Every figure is computed by MongoDB aggregations."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from beanie.odm.utils.encoder import Encoder
from bson import Decimal128
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError
from redis.exceptions import RedisError

from app.assets.documents import Asset
from app.config import Settings
from app.lib import cache
from app.lib.errors import BadRequest, require_one_of
from app.lib.money import wei_string
from app.lib.pagination import Sort, decode_cursor, encode_cursor, keyset_page
from app.lib.params import DEFAULT_LIMIT, MAX_LIMIT, bounded_query
from app.lib.timeutil import client_time, utcnow
from app.market import schemas
from app.market.documents import Transaction

log = structlog.get_logger(__name__)

# The stats are cached as `generation|computedAt|body`. They are fresh while their generation is current
# (writes that change them bump it) and for STATS_FRESH_S at most, as the windows slide. One request at a
# time recomputes them (under STATS_LOCK_KEY); the others meanwhile serve the last value, which is kept
# for STATS_KEEP_S whatever its generation, or on a cold cache wait for the first one.
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
TX_SORT = Sort("timestamp", -1)
_ZERO = Decimal128("0")
_IMMUTABLE = (
    "type",
    "tokenId",
    "assetId",
    "price",
    "priceWei",
    "priceUsd",
    "seller",
    "buyer",
    "parties",
    "timestamp",
)
_MUTABLE = ("status", "platformFee", "platformFeeWei", "paymentMethod")


def transactions_collection():
    return Transaction.get_pymongo_collection()


async def invalidate_stats(redis) -> None:
    """Call after a committed write that changes the aggregates (an asset added, a price, listing, owner
    or sale written): the cached figures are recomputed on the next read."""
    await redis.incr(STATS_GENERATION_KEY)


async def record_transaction(redis, transaction: Transaction) -> bool:
    """Upsert by transaction hash: writing the same transaction twice changes nothing.

    What the chain fixed (parties, price, time) is written once; status and fees may advance. Returns
    whether this call inserted it. An upsert race on the unique hash index surfaces as E11000: retry.
    """
    data = Encoder().encode(transaction)  # as Beanie stores it: wei as Decimal128
    chain = data.pop("blockchain")
    tx_hash = chain["transactionHash"].lower()
    chain["transactionHash"] = tx_hash
    on_insert = {key: data[key] for key in _IMMUTABLE}
    on_insert["blockchain.transactionHash"] = tx_hash
    changes = {key: data[key] for key in _MUTABLE}
    for key in ("blockNumber", "gasUsed", "gasPriceWei"):
        if chain.get(key) is not None:
            changes[f"blockchain.{key}"] = chain[key]
    for attempt in range(2):
        try:
            result = await transactions_collection().update_one(
                {"blockchain.transactionHash": tx_hash},
                {"$setOnInsert": on_insert, "$set": changes},
                upsert=True,
            )
            break
        except DuplicateKeyError:
            if attempt:
                raise
    await invalidate_stats(redis)
    return result.upserted_id is not None


async def backfill_parties(batch: int = 500) -> int:
    """Give `parties` to transactions written before it existed (idempotent); returns how many changed."""
    collection = transactions_collection()
    changed = 0
    while True:
        docs = await collection.find(
            {"parties": {"$exists": False}}, {"seller": 1, "buyer": 1}, limit=batch
        ).to_list()
        if not docs:
            return changed
        ops = [
            UpdateOne(
                {"_id": d["_id"]},
                {"$set": {"parties": [p for p in dict.fromkeys((d.get("seller"), d.get("buyer"))) if p]}},
            )
            for d in docs
        ]
        changed += (await collection.bulk_write(ops, ordered=False)).modified_count


def transaction_filter(
    *,
    type: str | None = None,
    token_id: int | None = None,
    wallet: str | None = None,
    status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """A filter from typed, checked values only."""
    query: dict[str, Any] = {}
    if type is not None:
        query["type"] = require_one_of(type, schemas.TRANSACTION_TYPES, field="type", code="invalid_type")
    if token_id is not None:
        if not 0 <= token_id <= 2**63 - 1:
            raise BadRequest("tokenId must be an integer from 0 to 2^63-1", code="invalid_token_id")
        query["tokenId"] = token_id
    if status is not None:
        query["status"] = require_one_of(
            status, schemas.TRANSACTION_STATUSES, field="status", code="invalid_status"
        )
    window: dict[str, datetime] = {}
    if start is not None:
        window["$gte"] = client_time(start, "from")
    if end is not None:
        window["$lt"] = client_time(end, "to")
    if start is not None and end is not None and window["$gte"] >= window["$lt"]:
        raise BadRequest("from must be before to", code="invalid_range")
    if window:
        query["timestamp"] = window
    if wallet is not None:
        query["parties"] = wallet  # seller or buyer: one multikey index, where an $or scanned everything
    return query


def _item(doc: dict[str, Any]) -> schemas.TransactionItem:
    chain = doc.get("blockchain") or {}
    return schemas.TransactionItem(
        id=str(doc["_id"]),
        type=doc["type"],
        tokenId=doc["tokenId"],
        price=doc.get("price"),
        priceWei=wei_string(doc.get("priceWei")),
        priceUsd=doc.get("priceUsd"),
        seller=doc.get("seller"),
        buyer=doc.get("buyer"),
        timestamp=doc["timestamp"],
        status=doc.get("status", "pending"),
        platformFee=doc.get("platformFee"),
        platformFeeWei=wei_string(doc.get("platformFeeWei")),
        paymentMethod=doc.get("paymentMethod"),
        transactionHash=chain.get("transactionHash"),
        blockNumber=chain.get("blockNumber"),
        gasUsed=chain.get("gasUsed"),
        gasPriceWei=wei_string(chain.get("gasPriceWei")),
    )


async def list_transactions(
    settings: Settings, query: dict[str, Any], *, limit: int | None, cursor: str | None
) -> schemas.TransactionPage:
    """Newest first, keyset-paged by (timestamp, _id)."""
    size = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= size <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    secret = settings.auth.jwt_secret.get_secret_value()
    after = decode_cursor(secret, "transactions", cursor) if cursor is not None else None
    async with bounded_query():
        docs, last = await keyset_page(
            transactions_collection(),
            query,
            TX_SORT,
            limit=size,
            after=after,
            projection=None,
            max_time_ms=settings.mongodb.max_time_ms,
        )
    return schemas.TransactionPage(
        items=[_item(doc) for doc in docs],
        nextCursor=encode_cursor(secret, "transactions", last) if last else None,
        limit=size,
    )


# ---------------------------------------------------------------- market stats


def _change(current: float, previous: float) -> float | None:
    if not previous:
        return None
    return round((current - previous) / previous * 100, 2)


async def _asset_figures(max_time_ms: int) -> dict[str, Any]:
    listed = "$marketStatus.isListed"
    pipeline = [
        {
            "$facet": {
                "byType": [
                    {
                        "$group": {
                            "_id": "$assetType",
                            "count": {"$sum": 1},
                            "listed": {"$sum": {"$cond": [listed, 1, 0]}},
                            "floorPrice": {"$min": {"$cond": [listed, "$marketStatus.listingPrice", None]}},
                            "floorPriceWei": {
                                "$min": {"$cond": [listed, "$marketStatus.listingPriceWei", None]}
                            },
                            "meanPrice": {"$avg": "$currentPrice.value"},
                            "medianPrice": {
                                "$median": {"input": "$currentPrice.value", "method": "approximate"}
                            },
                        }
                    },
                    {"$sort": {"_id": 1}},
                ],
                "owners": [
                    {"$match": {"ownership.currentOwner": {"$type": "string"}}},
                    {"$group": {"_id": "$ownership.currentOwner"}},
                    {"$count": "owners"},
                ],
            }
        }
    ]
    rows = await (await Asset.get_pymongo_collection().aggregate(pipeline, maxTimeMS=max_time_ms)).to_list()
    return rows[0] if rows else {"byType": [], "owners": []}


async def _sales_figures(now: datetime, max_time_ms: int) -> dict[str, Any]:
    longest = max(WINDOWS.values())
    group: dict[str, Any] = {"_id": None}
    for name, span in WINDOWS.items():
        current = {"$gte": ["$timestamp", now - span]}
        previous = {"$and": [{"$gte": ["$timestamp", now - 2 * span]}, {"$lt": ["$timestamp", now - span]}]}
        for label, condition in (("", current), ("prev", previous)):
            group[f"{label}{name}volume"] = {"$sum": {"$cond": [condition, {"$ifNull": ["$price", 0]}, 0]}}
            group[f"{label}{name}wei"] = {
                "$sum": {"$cond": [condition, {"$ifNull": ["$priceWei", _ZERO]}, _ZERO]}
            }
            group[f"{label}{name}sales"] = {"$sum": {"$cond": [condition, 1, 0]}}
    pipeline = [
        {
            "$match": {
                "type": {"$in": list(schemas.SALE_TYPES)},
                "status": "completed",
                "timestamp": {"$gte": now - 2 * longest, "$lt": now},
            }
        },
        {"$group": group},
    ]
    rows = await (await transactions_collection().aggregate(pipeline, maxTimeMS=max_time_ms)).to_list()
    totals = rows[0] if rows else {}
    figures = {}
    for name in WINDOWS:
        volume, previous = totals.get(f"{name}volume", 0.0), totals.get(f"prev{name}volume", 0.0)
        sales, previous_sales = totals.get(f"{name}sales", 0), totals.get(f"prev{name}sales", 0)
        figures[name] = {
            "volume": round(volume, 9),
            "volumeWei": wei_string(totals.get(f"{name}wei")) or "0",
            "salesCount": sales,
            "previousVolume": round(previous, 9),
            "previousVolumeWei": wei_string(totals.get(f"prev{name}wei")) or "0",
            "previousSalesCount": previous_sales,
            "volumeChangePct": _change(volume, previous),
            "salesChangePct": _change(sales, previous_sales),
        }
    return figures


async def compute_stats(settings: Settings) -> bytes:
    now = utcnow()
    async with bounded_query():
        assets = await _asset_figures(settings.mongodb.max_time_ms)
        sales = await _sales_figures(now, settings.mongodb.max_time_ms)
    by_type = [
        {
            "assetType": row["_id"],
            "count": row["count"],
            "listedCount": row["listed"],
            "floorPrice": row.get("floorPrice"),
            "floorPriceWei": wei_string(row.get("floorPriceWei")),
            "meanPrice": row.get("meanPrice"),
            "medianPrice": row.get("medianPrice"),
        }
        for row in assets["byType"]
    ]
    body = {
        "generatedAt": now,
        "totalAssets": sum(row["count"] for row in by_type),
        "listedCount": sum(row["listedCount"] for row in by_type),
        "uniqueOwners": assets["owners"][0]["owners"] if assets["owners"] else 0,
        "assetsByType": {row["assetType"]: row["count"] for row in by_type},
        "priceByType": by_type,
        "volume": sales,
    }
    return msgspec.json.encode(body)


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
    generation, stored = await redis.mget(STATS_GENERATION_KEY, STATS_KEY)
    return generation or b"0", _CachedStats.parse(stored)


async def _recompute_stats(redis, settings: Settings) -> bytes:
    """Under the lock: the figures the previous holder stored since our last read, else new ones."""
    try:
        generation, last = await _read_stats(redis)
    except (RedisError, OSError) as exc:
        log.warning("cache.get_failed", cache=STATS_CACHE, error=str(exc))
        generation, last = b"0", None
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
