"""Queries of the `auditLogs` collection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING

from app.audit.documents import AuditLog
from app.lib.db import in_slices

# The archive's order: by time, ties by id, so a day's entries come out the same way every time.
ARCHIVE_ORDER = [("timestamp", ASCENDING), ("_id", ASCENDING)]


def _collection():
    return AuditLog.get_pymongo_collection()


async def insert(entry: AuditLog) -> None:
    await entry.insert()


async def oldest_timestamp_before(cutoff: datetime) -> datetime | None:
    """The time of the oldest entry stamped before `cutoff`; None when there is none."""
    raw = await _collection().find_one({"timestamp": {"$lt": cutoff}}, {"timestamp": 1}, sort=ARCHIVE_ORDER)
    return None if raw is None else raw["timestamp"]


def first_entries_between(start: datetime, end: datetime, limit: int) -> AsyncIterator[dict[str, Any]]:
    """The first `limit` entries stamped in [start, end), whole and raw, in the archive's order."""
    return _collection().find(
        {"timestamp": {"$gte": start, "$lt": end}},
        sort=ARCHIVE_ORDER,
        limit=limit,
        batch_size=min(limit, 1000),
    )


async def delete_by_ids(ids: Sequence[ObjectId]) -> int:
    """Delete exactly these entries, in order, a slice at a time; how many there still were."""
    deleted = 0
    for chunk in in_slices(ids):
        deleted += (await _collection().delete_many({"_id": {"$in": chunk}})).deleted_count
    return deleted
