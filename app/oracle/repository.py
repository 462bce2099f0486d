"""Every query of the oracle domain's data: `dataSources`, `comparableSales` and `indexPoints`.

Rows are written in bulk (`UpdateOne` upserts keyed by their unique index, unordered, in batches), so a
refresh costs a few round trips whatever its size, and writing the same rows again changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from app.lib.pagination import Position, Sort, keyset_page
from app.oracle.documents import ComparableSale, DataSource, IndexPoint

BATCH = 1000
LIST_SORT = Sort("createdAt", -1)


class NameTaken(Exception):
    """Another source has this name."""


def sources():
    return DataSource.get_pymongo_collection()


def sales():
    return ComparableSale.get_pymongo_collection()


def points():
    return IndexPoint.get_pymongo_collection()


# ---------------------------------------------------------------- sources


async def insert_source(document: dict[str, Any]) -> ObjectId:
    """Insert a source; NameTaken when its name is."""
    try:
        return (await sources().insert_one(document)).inserted_id
    except DuplicateKeyError as exc:
        raise NameTaken from exc


async def find_source(source_id: ObjectId) -> dict[str, Any] | None:
    return await sources().find_one({"_id": source_id})


async def update_source(source_id: ObjectId, changes: dict[str, Any]) -> dict[str, Any] | None:
    """`$set` these paths; the source after it, None when there is none, NameTaken on a renaming clash."""
    try:
        return await sources().find_one_and_update(
            {"_id": source_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
    except DuplicateKeyError as exc:
        raise NameTaken from exc


async def delete_source(source_id: ObjectId) -> dict[str, Any] | None:
    """Delete the source and every row it brought; the source deleted, or None."""
    deleted = await sources().find_one_and_delete({"_id": source_id})
    if deleted is not None:
        await sales().delete_many({"sourceId": source_id})
        await points().delete_many({"sourceId": source_id})
    return deleted


def source_query(kind: str | None, source_type: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if kind is not None:
        query["kind"] = kind
    if source_type is not None:
        query["type"] = source_type
    return query


async def source_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of sources, newest first."""
    return await keyset_page(
        sources(), query, LIST_SORT, limit=limit, after=after, projection=None, max_time_ms=max_time_ms
    )


async def due_sources(now: datetime, limit: int) -> list[dict[str, Any]]:
    """Enabled sources whose next fetch is due, the most overdue first (a new source is due at once)."""
    query = {"status.isEnabled": True, "status.nextFetchAt": {"$lte": now}}
    return (
        await sources()
        .find(query, {"status.nextFetchAt": 1}, sort=[("status.nextFetchAt", 1)])
        .to_list(limit)
    )


async def record_fetch(
    source_id: ObjectId, changes: dict[str, Any], increments: dict[str, int]
) -> dict[str, Any] | None:
    return await sources().find_one_and_update(
        {"_id": source_id},
        {"$set": changes, "$inc": increments},
        return_document=ReturnDocument.AFTER,
    )


# ---------------------------------------------------------------- rows


def sale_upsert(source_id: ObjectId, external_id: str, fields: dict[str, Any], now: datetime) -> UpdateOne:
    """The upsert of one sale: a sale already stored with the same fields is left as it is."""
    return UpdateOne(
        {"sourceId": source_id, "externalId": external_id},
        {"$set": fields, "$setOnInsert": {"createdAt": now}},
        upsert=True,
    )


def point_upsert(
    source_id: ObjectId, timestamp: datetime, fields: dict[str, Any], now: datetime
) -> UpdateOne:
    return UpdateOne(
        {"sourceId": source_id, "timestamp": timestamp},
        {"$set": fields, "$setOnInsert": {"createdAt": now}},
        upsert=True,
    )


async def write(collection, operations: list[UpdateOne]) -> tuple[int, int, int]:
    """Run the upserts in unordered batches: (inserted, updated, unchanged)."""
    inserted = updated = matched = 0
    for start in range(0, len(operations), BATCH):
        result = await collection.bulk_write(operations[start : start + BATCH], ordered=False)
        inserted += result.upserted_count
        updated += result.modified_count
        matched += result.matched_count
    return inserted, updated, matched - updated


async def write_sales(operations: list[UpdateOne]) -> tuple[int, int, int]:
    return await write(sales(), operations)


async def write_points(operations: list[UpdateOne]) -> tuple[int, int, int]:
    return await write(points(), operations)


async def rates(series: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
    """The points of `series` that price times in [start, end]: the last one at or before `start`, and
    every one after it up to `end`."""
    before = await points().find_one(
        {"series": series, "timestamp": {"$lte": start}},
        {"timestamp": 1, "valueExact": 1},
        sort=[("timestamp", -1)],
    )
    window = points().find(
        {"series": series, "timestamp": {"$gt": start, "$lte": end}},
        {"timestamp": 1, "valueExact": 1},
    )
    found = ([before] if before else []) + await window.to_list()
    return [(doc["timestamp"], _decimal(doc["valueExact"])) for doc in found]


def _decimal(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
