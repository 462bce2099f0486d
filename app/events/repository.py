"""Queries of the `events` outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from app.events.documents import EventRecord
from app.lib.timeutil import utcnow

DUPLICATE_KEY = 11000
# The order events are published in: as recorded (by the recording process's clock), then as listed in
# one recording (a chain pass lists its events in chain order).
ORDER = [("createdAt", ASCENDING), ("order", ASCENDING), ("_id", ASCENDING)]


def _collection():
    return EventRecord.get_pymongo_collection()


async def record(events: list[dict[str, Any]]) -> int:
    """Add these events (each with its `_id` key), leaving any already recorded; how many were new."""
    if not events:
        return 0
    now = utcnow()
    documents = [
        {"createdAt": now, "order": n, "eventId": None, "publishedAt": None, "doneAt": None, **e}
        for n, e in enumerate(events)
    ]
    try:
        result = await _collection().insert_many(documents, ordered=False)
        return len(result.inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return exc.details.get("nInserted", 0)


async def recorded(keys: list[str]) -> dict[str, str]:
    """Which of these events are recorded: key -> event name."""
    found = _collection().find({"_id": {"$in": keys}}, {"event": 1})
    return {doc["_id"]: doc["event"] async for doc in found}


def _among(query: dict[str, Any], keys: list[str] | None) -> dict[str, Any]:
    return query if keys is None else {**query, "_id": {"$in": keys}}


async def unpublished(limit: int, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """Events not yet published, in order (of `keys` only, when given)."""
    query = _among({"eventId": None, "failedAt": None}, keys)
    return await _collection().find(query, sort=ORDER, limit=limit).to_list()


async def waiting_before(keys: list[str]) -> bool:
    """Whether an unpublished event other than these waits (they would be published ahead of it)."""
    query = {"eventId": None, "failedAt": None, "_id": {"$nin": keys}}
    return await _collection().find_one(query, {"_id": 1}) is not None


async def publish_failed(key: str, error: str, max_attempts: int) -> bool:
    """Count a failed publication of the event; past `max_attempts` it is set aside. Whether it was."""
    found = await _collection().find_one_and_update(
        {"_id": key, "eventId": None},
        {"$inc": {"publishAttempts": 1}, "$set": {"lastError": error}},
        return_document=ReturnDocument.AFTER,
    )
    if found is None or found.get("publishAttempts", 0) < max_attempts:
        return False
    now = utcnow()  # kept a week for inspection (the TTL on doneAt), then gone
    await _collection().update_one({"_id": key}, {"$set": {"failedAt": now, "doneAt": now}})
    return True


async def mark_published(published: list[tuple[str, str, datetime]]) -> None:
    """(key, event id, time) triples: the id each event was published under, and when."""
    if published:
        operations = [
            UpdateOne({"_id": key, "eventId": None}, {"$set": {"eventId": event_id, "publishedAt": at}})
            for key, event_id, at in published
        ]
        await _collection().bulk_write(operations, ordered=False)


async def not_handed_over(limit: int, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """Published events not yet handed to the webhooks, in order (of `keys` only, when given)."""
    query = _among({"doneAt": None, "eventId": {"$ne": None}}, keys)
    return await _collection().find(query, sort=ORDER, limit=limit).to_list()


async def mark_done(keys: list[str], at: datetime) -> None:
    if keys:
        await _collection().update_many({"_id": {"$in": keys}}, {"$set": {"doneAt": at}})


async def backlog() -> dict[str, int]:
    """Events waiting to be published, and published ones waiting for the webhooks."""
    return {
        "unpublished": await _collection().count_documents({"eventId": None, "failedAt": None}),
        "failed": await _collection().count_documents({"failedAt": {"$ne": None}}),
        "unhanded": await _collection().count_documents({"doneAt": None, "eventId": {"$ne": None}}),
    }
