"""The queries of the assets' prices: an asset's price history (keyset pages of points, OHLC buckets),
and the oracle's appraisals (what an appraisal reads of the assets, the prices and points it writes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from app.assets.documents import Asset, PriceHistory
from app.lib.db import in_slices
from app.lib.pagination import Position, Sort, keyset_page

HISTORY_SORT = Sort("timestamp", 1)
DUPLICATE_KEY = 11000


def assets_collection():
    return Asset.get_pymongo_collection()


def history_collection():
    return PriceHistory.get_pymongo_collection()


# ---------------------------------------------------------------- price history


def history_query(
    token_id: int, start: datetime | None, end: datetime | None, source: str | None
) -> dict[str, Any]:
    """The points of one token in `[start, end)`, from one kind of source (None: no bound)."""
    query: dict[str, Any] = {"tokenId": token_id}
    window: dict[str, datetime] = {}
    if start is not None:
        window["$gte"] = start
    if end is not None:
        window["$lt"] = end
    if window:
        query["timestamp"] = window
    if source is not None:
        query["source.type"] = source
    return query


async def history_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of raw points, oldest first."""
    return await keyset_page(
        history_collection(),
        query,
        HISTORY_SORT,
        limit=limit,
        after=after,
        projection=None,
        max_time_ms=max_time_ms,
    )


async def history_buckets(query: dict[str, Any], unit: str, max_time_ms: int) -> list[dict[str, Any]]:
    """OHLC, mean, count and mean confidence of the points per `unit` (hour, day, week from Monday)."""
    truncate: dict[str, Any] = {"date": "$timestamp", "unit": unit}
    if unit == "week":
        truncate["startOfWeek"] = "monday"
    pipeline = [
        {"$match": query},
        {"$sort": {"timestamp": 1}},
        {
            "$group": {
                "_id": {"$dateTrunc": truncate},
                "open": {"$first": "$price"},
                "close": {"$last": "$price"},
                "high": {"$max": "$price"},
                "low": {"$min": "$price"},
                "mean": {"$avg": "$price"},
                "count": {"$sum": 1},
                "meanConfidence": {"$avg": "$aiMetrics.confidenceScore"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    return await (await history_collection().aggregate(pipeline, maxTimeMS=max_time_ms)).to_list()


# ---------------------------------------------------------------- the oracle's appraisals

APPRAISAL_PROJECTION = {
    "tokenId": 1,
    "assetType": 1,
    "metadata.assetLocation": 1,
    "metadata.acquisitionDate": 1,
    "metadata.dimensions": 1,
    "metadata.materials": 1,
    "metadata.creator": 1,
    "metadata.creationDate": 1,
    "metadata.condition": 1,
    "metadata.customAttributes": 1,
    "marketStatus.isListed": 1,
    "marketStatus.listingPrice": 1,
    "marketStatus.listedAt": 1,
    "currentPrice.updatedAt": 1,
    "appraisal.timestamp": 1,
    "createdAt": 1,
}


async def appraisal_batch(token_ids: list[int] | None, after: int | None, limit: int) -> list[dict[str, Any]]:
    """The next assets by tokenId after `after`, with what an appraisal reads of them: `limit` of them,
    or of the next `limit` of `token_ids` when given (those that exist)."""
    if token_ids is not None:
        found: list[dict[str, Any]] = []
        for part in in_slices(sorted(t for t in token_ids if after is None or t > after)[:limit]):
            cursor = assets_collection().find({"tokenId": {"$in": part}}, APPRAISAL_PROJECTION)
            found += await cursor.sort("tokenId", 1).to_list(None)
        return found
    query = {"tokenId": {"$gt": after}} if after is not None else {}
    cursor = assets_collection().find(query, APPRAISAL_PROJECTION).sort("tokenId", 1).limit(limit)
    return await cursor.to_list(limit)


async def write_appraisals(asset_updates: list[UpdateOne], points: list[dict[str, Any]]) -> tuple[int, int]:
    """Apply the appraisals to their assets and add their price points (keyed by prediction id, so a
    retried batch adds none twice): (assets changed, points added)."""
    changed = added = 0
    if asset_updates:
        changed = (await assets_collection().bulk_write(asset_updates, ordered=False)).modified_count
    if points:
        try:
            added = len((await history_collection().insert_many(points, ordered=False)).inserted_ids)
        except BulkWriteError as exc:
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise
            added = exc.details.get("nInserted", 0)
    return changed, added
