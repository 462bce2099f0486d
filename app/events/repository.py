"""Queries of the `events` outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from app.events.documents import EventRecord
from app.lib.timeutil import utcnow

DUPLICATE_KEY = 11000
ORDER = [("createdAt", ASCENDING), ("_id", ASCENDING)]


def _collection():
    return EventRecord.get_pymongo_collection()


async def record(events: list[dict[str, Any]]) -> int:
    """Add these events (each with its `_id` key), leaving any already recorded; how many were new."""
    if not events:
        return 0
    now = utcnow()
    documents = [
        {"createdAt": now, "eventId": None, "publishedAt": None, "doneAt": None, **e} for e in events
    ]
    try:
        result = await _collection().insert_many(documents, ordered=False)
        return len(result.inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return exc.details.get("nInserted", 0)


async def unpublished(limit: int) -> list[dict[str, Any]]:
    return await _collection().find({"eventId": None}, sort=ORDER, limit=limit).to_list()


async def mark_published(published: list[tuple[str, str, datetime]]) -> None:
    """(key, event id, time) triples: the id each event was published under, and when."""
    if published:
        operations = [
            UpdateOne({"_id": key, "eventId": None}, {"$set": {"eventId": event_id, "publishedAt": at}})
            for key, event_id, at in published
        ]
        await _collection().bulk_write(operations, ordered=False)


async def not_handed_over(limit: int) -> list[dict[str, Any]]:
    """Published events not yet handed to the webhooks, in order."""
    query = {"doneAt": None, "eventId": {"$ne": None}}
    return await _collection().find(query, sort=ORDER, limit=limit).to_list()


async def mark_done(keys: list[str], at: datetime) -> None:
    if keys:
        await _collection().update_many({"_id": {"$in": keys}}, {"$set": {"doneAt": at}})


async def backlog() -> dict[str, int]:
    """Events waiting to be published, and published ones waiting for the webhooks."""
    return {
        "unpublished": await _collection().count_documents({"eventId": None}),
        "unhanded": await _collection().count_documents({"doneAt": None, "eventId": {"$ne": None}}),
    }
