"""Every query of the webhooks domain: `webhooks` (subscriptions) and `webhookDeliveries`.

Deliveries are written in bulk (`UpdateOne` upserts on their unique (webhookId, eventId), unordered, in
batches), so handing the same events over twice creates nothing. An attempt claims its delivery with a
compare-and-set, and writes its outcome only while its claim still holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from app.lib.db import in_slices
from app.lib.pagination import Position, Sort, keyset_page
from app.webhooks.documents import WebhookDelivery, WebhookSubscription

BATCH = 1000
LIST_SORT = Sort("createdAt", -1)
DUPLICATE_KEY = 11000
# What a list shows of a delivery: not its body.
DELIVERY_FIELDS = {"body": 0, "claim": 0, "eventKey": 0, "leaseUntil": 0}


def subscriptions():
    return WebhookSubscription.get_pymongo_collection()


def deliveries():
    return WebhookDelivery.get_pymongo_collection()


# ---------------------------------------------------------------- subscriptions


async def insert_webhook(document: dict[str, Any]) -> ObjectId:
    return (await subscriptions().insert_one(document)).inserted_id


async def count_owned(owner: str) -> int:
    return await subscriptions().count_documents({"owner": owner})


async def find_webhook(webhook_id: ObjectId) -> dict[str, Any] | None:
    return await subscriptions().find_one({"_id": webhook_id})


async def delete_webhook(webhook_id: ObjectId) -> dict[str, Any] | None:
    return await subscriptions().find_one_and_delete({"_id": webhook_id})


def webhook_query(owner: str | None) -> dict[str, Any]:
    return {} if owner is None else {"owner": owner}


async def webhook_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of subscriptions, newest first."""
    return await keyset_page(
        subscriptions(), query, LIST_SORT, limit=limit, after=after, projection=None, max_time_ms=max_time_ms
    )


async def active_for_topics(topics: list[str]) -> list[dict[str, Any]]:
    """The active subscriptions to any of `topics` (their id and topics), each once."""
    found: dict[ObjectId, dict[str, Any]] = {}
    for part in in_slices(topics):
        cursor = subscriptions().find({"status": "active", "topics": {"$in": part}}, {"topics": 1})
        for doc in await cursor.to_list():
            found.setdefault(doc["_id"], doc)
    return list(found.values())


async def record_success(webhook_id: ObjectId, now: datetime, status_code: int) -> None:
    await subscriptions().update_one(
        {"_id": webhook_id},
        {
            "$set": {
                "consecutiveFailures": 0,
                "lastStatusCode": status_code,
                "lastError": None,
                "lastDeliveryAt": now,
                "lastSuccessAt": now,
            }
        },
    )


async def record_failure(
    webhook_id: ObjectId, now: datetime, status_code: int | None, error: str
) -> dict[str, Any] | None:
    """Count one failed attempt; the subscription after it (None when it was deleted meanwhile)."""
    return await subscriptions().find_one_and_update(
        {"_id": webhook_id},
        {
            "$inc": {"consecutiveFailures": 1},
            "$set": {"lastStatusCode": status_code, "lastError": error, "lastDeliveryAt": now},
        },
        projection={"status": 1, "consecutiveFailures": 1},
        return_document=ReturnDocument.AFTER,
    )


async def disable(webhook_id: ObjectId, reason: str, now: datetime) -> bool:
    """Disable an active subscription; whether this call did."""
    result = await subscriptions().update_one(
        {"_id": webhook_id, "status": "active"},
        {"$set": {"status": "disabled", "disabledReason": reason, "disabledAt": now}},
    )
    return result.modified_count == 1


# ---------------------------------------------------------------- deliveries


def delivery_upsert(document: dict[str, Any]) -> UpdateOne:
    """The insert of a delivery unless one exists for its subscription and event (then nothing changes)."""
    return UpdateOne(
        {"webhookId": document["webhookId"], "eventId": document["eventId"]},
        {"$setOnInsert": document},
        upsert=True,
    )


async def insert_deliveries(documents: list[dict[str, Any]]) -> list[ObjectId]:
    """Upsert the deliveries in unordered batches: the ids of those that did not exist."""
    created: list[ObjectId] = []
    for start in range(0, len(documents), BATCH):
        operations = [delivery_upsert(doc) for doc in documents[start : start + BATCH]]
        try:
            result = await deliveries().bulk_write(operations, ordered=False)
            upserted = result.upserted_ids.values()
        except BulkWriteError as exc:
            # Another pass inserted some of them first: theirs stand, the rest are ours.
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise
            upserted = [item["_id"] for item in exc.details.get("upserted", [])]
        created.extend(upserted)
    return created


async def find_delivery(delivery_id: ObjectId) -> dict[str, Any] | None:
    return await deliveries().find_one({"_id": delivery_id}, {"body": 0})


def delivery_query(webhook_id: ObjectId, status: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {"webhookId": webhook_id}
    if status is not None:
        query["status"] = status
    return query


async def delivery_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of a subscription's deliveries, newest first."""
    return await keyset_page(
        deliveries(),
        query,
        LIST_SORT,
        limit=limit,
        after=after,
        projection=DELIVERY_FIELDS,
        max_time_ms=max_time_ms,
    )


def _claimable(now: datetime, due_by: datetime) -> dict[str, Any]:
    """Pending and due, or sending with its lease run out (the attempt was lost)."""
    return {
        "$or": [
            {"status": "pending", "nextAttemptAt": {"$lte": due_by}},
            {"status": "sending", "leaseUntil": {"$lt": now}},
        ]
    }


async def claim_delivery(
    delivery_id: ObjectId,
    token: str,
    now: datetime,
    *,
    due_by: datetime,
    lease_until: datetime,
    max_attempts: int,
) -> dict[str, Any] | None:
    """Take the delivery for one attempt (counted now), or None when it is not this caller's to take."""
    return await deliveries().find_one_and_update(
        {"_id": delivery_id, "attempts": {"$lt": max_attempts}, **_claimable(now, due_by)},
        {
            "$set": {"status": "sending", "claim": token, "leaseUntil": lease_until, "lastAttemptAt": now},
            "$inc": {"attempts": 1},
        },
        return_document=ReturnDocument.AFTER,
    )


async def settle_unclaimed(
    delivery_id: ObjectId, now: datetime, due_by: datetime, changes: dict[str, Any]
) -> bool:
    """End a delivery no attempt holds (skipped, or out of attempts): whether this call did."""
    result = await deliveries().update_one(
        {"_id": delivery_id, **_claimable(now, due_by)},
        {"$set": {**changes, "nextAttemptAt": None, "leaseUntil": None, "claim": None}},
    )
    return result.modified_count == 1


async def finish_attempt(delivery_id: ObjectId, token: str, changes: dict[str, Any]) -> bool:
    """Write an attempt's outcome while its claim holds: whether it still did."""
    result = await deliveries().update_one(
        {"_id": delivery_id, "status": "sending", "claim": token},
        {"$set": {**changes, "leaseUntil": None, "claim": None}},
    )
    return result.modified_count == 1


async def skip_pending(webhook_id: ObjectId, reason: str) -> int:
    """Skip a subscription's deliveries waiting for an attempt (one in flight ends as it ends)."""
    result = await deliveries().update_many(
        {"webhookId": webhook_id, "status": "pending"},
        {"$set": {"status": "skipped", "lastError": reason, "nextAttemptAt": None}},
    )
    return result.modified_count


async def make_due(delivery_id: ObjectId, now: datetime, overdue_before: datetime) -> bool:
    """A stranded delivery (pending past `overdue_before`, or sending past its lease) made pending and
    due now, its lost attempt's claim dropped: whether this call did."""
    result = await deliveries().update_one(
        {"_id": delivery_id, **_claimable(now, overdue_before)},
        {"$set": {"status": "pending", "nextAttemptAt": now, "leaseUntil": None, "claim": None}},
    )
    return result.modified_count == 1


async def stranded(now: datetime, overdue_before: datetime, limit: int) -> list[dict[str, Any]]:
    """Deliveries whose job may be lost: pending past `overdue_before`, or sending past their lease."""
    fields = {"attempts": 1, "status": 1}
    pending = deliveries().find(
        {"status": "pending", "nextAttemptAt": {"$lt": overdue_before}},
        fields,
        sort=[("nextAttemptAt", 1)],
    )
    leased = deliveries().find(
        {"status": "sending", "leaseUntil": {"$lt": now}}, fields, sort=[("leaseUntil", 1)]
    )
    return [*await pending.to_list(limit), *await leased.to_list(limit)]
