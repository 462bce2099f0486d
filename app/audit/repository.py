"""Queries of the `auditLogs` collection."""

from __future__ import annotations

import pymongo
from pymongo import IndexModel

from app.audit.documents import AuditLog

RETENTION_INDEX = "timestamp"


async def insert(entry: AuditLog) -> None:
    await entry.insert()


async def set_retention(seconds: int) -> None:
    """Create the timestamp TTL index, or change its TTL in place."""
    collection = AuditLog.get_pymongo_collection()
    current = (await collection.index_information()).get(RETENTION_INDEX)
    if current is None:
        await collection.create_indexes(
            [
                IndexModel(
                    [("timestamp", pymongo.DESCENDING)], name=RETENTION_INDEX, expireAfterSeconds=seconds
                )
            ]
        )
    elif current.get("expireAfterSeconds") != seconds:
        await collection.database.command(
            {"collMod": collection.name, "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds}}
        )
