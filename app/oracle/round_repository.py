"""Every query of the oracle's rounds (`oracleRounds`), and of the predictions and sources they read."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from app.lib.db import in_slices
from app.lib.pagination import Position, Sort, keyset_page
from app.oracle.documents import AIOracleData, DataSource
from app.oracle.round_documents import OracleRound

# A prediction its round accepted: `submitted` while the round's answer is on its way to the chain.
ACCEPTED = ("accepted", "submitted")
CLOSING_LEASE = timedelta(minutes=15)  # a close a crash left half done is taken over after this
PREDICTION_SORT = Sort("createdAt", -1)
ROUND_SORT = Sort("closesAt", -1)
OBSERVATION_FIELDS = {
    "tokenId": 1,
    "assetId": 1,
    "assetType": 1,
    "timestamp": 1,
    "predictedPriceWei": 1,
    "interval": 1,
    "confidenceScore": 1,
    "dataSourcesUsed": 1,
    "operator": 1,
    "status": 1,
}


def rounds():
    return OracleRound.get_pymongo_collection()


def predictions():
    return AIOracleData.get_pymongo_collection()


# ---------------------------------------------------------------- joining a round


def _opening(key: str, token_id: int, asset: dict[str, Any], opened_at: datetime, closes_at: datetime):
    return {
        "$setOnInsert": {
            "key": key,
            "tokenId": token_id,
            "assetId": asset.get("_id"),
            "assetType": asset.get("assetType"),
            "openedAt": opened_at,
            "closesAt": closes_at,
            "status": "open",
            "submissions": 0,
            "members": [],
            "participants": [],
            "gates": [],
            "createdAt": opened_at,
        }
    }


Entry = tuple[
    str, int, dict[str, Any], datetime, datetime, ObjectId
]  # key, token, asset, opens, closes, member


async def join(entry: Entry, now: datetime, *, submission: bool) -> bool:
    """Open the round if it is not yet, and make the member one of its participants while it is still
    open; False when it has closed (the caller joins the next one)."""
    key, token_id, asset, opened_at, closes_at, member = entry
    await rounds().update_one({"key": key}, _opening(key, token_id, asset, opened_at, closes_at), upsert=True)
    joined = await rounds().update_one(
        {"key": key, "status": "open", "closesAt": {"$gt": now}},
        {"$addToSet": {"members": member}, "$inc": {"submissions": int(submission)}},
    )
    return joined.modified_count == 1


async def join_many(entries: list[Entry], now: datetime) -> set[ObjectId]:
    """`join` for many at once (the platform's appraisals): the members that joined an open round."""
    if not entries:
        return set()
    await rounds().bulk_write(
        [UpdateOne({"key": e[0]}, _opening(*e[:5]), upsert=True) for e in entries], ordered=False
    )
    pushes = [
        UpdateOne(
            {"key": key, "status": "open", "closesAt": {"$gt": now}}, {"$addToSet": {"members": member}}
        )
        for key, *_, member in entries
    ]
    await rounds().bulk_write(pushes, ordered=False)
    # which pushes landed: the members now in an open round
    joined: set[ObjectId] = set()
    keys = sorted({e[0] for e in entries})
    for part in in_slices(keys):
        async for doc in rounds().find({"key": {"$in": part}}, {"members": 1}):
            joined.update(doc.get("members") or ())
    return joined & {e[5] for e in entries}


async def unassigned_appraisals(limit: int) -> list[dict[str, Any]]:
    """The platform's current appraisals not in a round yet, oldest first."""
    query = {"round": None, "operator": None, "asOf": None, "status": "pending"}
    return (
        await predictions().find(query, OBSERVATION_FIELDS).sort("timestamp", 1).limit(limit).to_list(limit)
    )


async def orphans(before: datetime, limit: int) -> list[dict[str, Any]]:
    """Operators' submissions stored before `before` and in no round."""
    query = {"round": None, "operator": {"$ne": None}, "status": "pending", "createdAt": {"$lt": before}}
    return await predictions().find(query, OBSERVATION_FIELDS).limit(limit).to_list(limit)


async def place(prediction_id: ObjectId, key: str) -> None:
    """Name the round a submission is about to join (before it joins: a crash in between leaves it out
    of every round, never in two)."""
    await predictions().update_one({"_id": prediction_id, "status": "pending"}, {"$set": {"round": key}})


async def set_rounds(assigned: dict[ObjectId, str]) -> None:
    operations = [
        UpdateOne({"_id": pid, "round": None}, {"$set": {"round": key}}) for pid, key in assigned.items()
    ]
    if operations:
        await predictions().bulk_write(operations, ordered=False)


# ---------------------------------------------------------------- closing


def _due(closed_by: datetime, now: datetime) -> dict[str, Any]:
    return {
        "$or": [
            {"status": "open", "closesAt": {"$lte": closed_by}},
            {"status": "closing", "closingAt": {"$lte": now - CLOSING_LEASE}},
        ]
    }


async def due_keys(closed_by: datetime, now: datetime, limit: int) -> list[str]:
    """Rounds whose window ended by `closed_by`, oldest first, and closes a crash left half done."""
    found = (
        await rounds().find(_due(closed_by, now), {"key": 1}).sort("closesAt", 1).limit(limit).to_list(limit)
    )
    return [r["key"] for r in found]


async def claim(keys: list[str], closed_by: datetime, now: datetime, closer: str) -> list[dict[str, Any]]:
    """Take due rounds to close them, `IN_SLICE` at a time: only one closer gets each (the `closer` id it
    wrote), and a round's members are fixed from then on."""
    claimed: list[dict[str, Any]] = []
    for part in in_slices(keys):
        await rounds().update_many(
            {"key": {"$in": part}, **_due(closed_by, now)},
            {"$set": {"status": "closing", "closingAt": now, "closer": closer}},
        )
        claimed += (
            await rounds().find({"key": {"$in": part}, "status": "closing", "closer": closer}).to_list(None)
        )
    return claimed


async def observations(ids: list[ObjectId]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for part in in_slices(ids):
        found += await predictions().find({"_id": {"$in": part}}, OBSERVATION_FIELDS).to_list(None)
    return found


async def latest_appraisals(
    token_ids: list[int], since: datetime, until: datetime
) -> dict[int, dict[str, Any]]:
    """Each token's latest current platform appraisal made in [since, until]."""
    found: dict[int, dict[str, Any]] = {}
    for part in in_slices(sorted(token_ids)):
        query = {
            "tokenId": {"$in": part},
            "operator": None,
            "asOf": None,
            "timestamp": {"$gte": since, "$lte": until},
        }
        for doc in await predictions().find(query, OBSERVATION_FIELDS).sort("timestamp", 1).to_list(None):
            found[doc["tokenId"]] = doc
    return found


def scored(operator: str | None):
    """A cursor over an observer's scored predictions that counted in their rounds (ACCEPTED), newest
    sale first (the platform's: its current appraisals)."""
    query: dict[str, Any] = {"operator": operator, "status": {"$in": ACCEPTED}, "outcome": {"$ne": None}}
    if operator is None:
        query["asOf"] = None
    projection = {
        "timestamp": 1,
        "outcome.soldAt": 1,
        "outcome.source": 1,
        "outcome.ape": 1,
        "outcome.covered": 1,
    }
    return predictions().find(query, projection).sort("outcome.soldAt", -1).batch_size(500)


async def operator_counts() -> list[dict[str, Any]]:
    """Per observer (None: the platform's current appraisals), per status and rejection code: how many
    predictions, and the latest."""
    pipeline = [
        {"$match": {"$or": [{"operator": {"$ne": None}}, {"asOf": None}]}},
        {
            "$group": {
                "_id": {"operator": "$operator", "status": "$status", "code": "$rejectionCode"},
                "count": {"$sum": 1},
                "last": {"$max": "$createdAt"},
            }
        },
    ]
    return await (await predictions().aggregate(pipeline)).to_list(None)


async def source_health() -> list[dict[str, Any]]:
    """The enabled sources (a disabled one is switched off on purpose: what it brought stays good)."""
    projection = {"name": 1, "status": 1, "configuration.refreshInterval": 1}
    query = {"status.isEnabled": {"$ne": False}}
    return await DataSource.get_pymongo_collection().find(query, projection).to_list(None)


async def recent_rounds(token_ids: list[int], since: datetime) -> dict[int, list[dict[str, Any]]]:
    """Each token's rounds closed since `since`, newest first: what the jump gate's confirmations read."""
    found: dict[int, list[dict[str, Any]]] = {}
    projection = {"tokenId": 1, "answer": 1, "closesAt": 1, "status": 1, "rejectedBy": 1, "basis": 1}
    projection |= {"participants.carried": 1, "participants.operator": 1}
    for part in in_slices(sorted(token_ids)):
        query = {"tokenId": {"$in": part}, "closedAt": {"$gte": since}}
        for doc in await rounds().find(query, projection).sort("closesAt", -1).to_list(None):
            found.setdefault(doc["tokenId"], []).append(doc)
    return found


async def last_published(token_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each token's last published round (its push not failed): answer and close time."""
    found: dict[int, dict[str, Any]] = {}
    for part in in_slices(sorted(token_ids)):
        query = {
            "tokenId": {"$in": part},
            "decision.decision": "published",
            "publication.status": {"$nin": ["failed", "expired", "superseded"]},
        }
        cursor = rounds().find(query, {"tokenId": 1, "answer": 1, "closesAt": 1}).sort("closesAt", 1)
        for doc in await cursor.to_list(None):
            found[doc["tokenId"]] = doc
    return found


async def close(outcomes: dict[str, dict[str, Any]], closer: str) -> set[str]:
    """Write the outcome of each round this closer still holds; the keys written."""
    if not outcomes:
        return set()
    operations = [
        UpdateOne(
            {"key": key, "status": "closing", "closer": closer},
            {
                "$set": {**changes, "closedBy": closer, "announced": False},
                "$unset": {"closingAt": "", "closer": ""},
            },
        )
        for key, changes in outcomes.items()
    ]
    result = await rounds().bulk_write(operations, ordered=False)
    if result.modified_count == len(operations):
        return set(outcomes)
    written: set[str] = set()
    for part in in_slices(sorted(outcomes)):
        async for doc in rounds().find({"key": {"$in": part}, "closedBy": closer}, {"key": 1}):
            written.add(doc["key"])
    return written


async def not_announced(limit: int) -> list[dict[str, Any]]:
    """Closed rounds whose `oracle_round_closed` is not in the events outbox yet."""
    projection = {"key": 1, "tokenId": 1, "status": 1, "answer": 1, "decision": 1, "rejectedBy": 1}
    return await rounds().find({"announced": False}, projection, limit=limit).to_list()


async def mark_announced(keys: list[str]) -> None:
    for part in in_slices(keys):
        await rounds().update_many({"key": {"$in": part}, "announced": False}, {"$set": {"announced": True}})


async def set_verdicts(verdicts: list[tuple[ObjectId, str, str | None, str]]) -> None:
    """Each own member's verdict: accepted, or rejected with a reason."""
    operations = [
        UpdateOne(
            {"_id": pid, "status": "pending"},
            {
                "$set": {
                    "status": status,
                    "rejectionReason": reason,
                    "rejectionCode": reason.split(":", 1)[0] if reason else None,
                    "round": key,
                }
            },
        )
        for pid, status, reason, key in verdicts
    ]
    if operations:
        await predictions().bulk_write(operations, ordered=False)


async def stragglers(before: datetime, limit: int) -> list[dict[str, Any]]:
    """Predictions in a round still pending since before `before`: their round may have closed without
    them (a late join), or a crash came between a close and its verdicts."""
    query = {"status": "pending", "round": {"$ne": None}, "createdAt": {"$lt": before}}
    cursor = (
        predictions().find(query, {"round": 1}).sort("createdAt", 1)
    )  # the oldest: their rounds closed first
    return await cursor.limit(limit).to_list(limit)


async def final_rounds(keys: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for part in in_slices(sorted(keys)):
        query = {"key": {"$in": part}, "status": {"$nin": ["open", "closing"]}}
        async for doc in rounds().find(query, {"key": 1, "participants": 1, "decision": 1}):
            found[doc["key"]] = doc
    return found


async def refusals_since(since: datetime) -> dict[str, int]:
    """Rounds closed since `since` without an answer to publish, by what refused them (a gate, or quorum)."""
    pipeline = [
        {"$match": {"closedAt": {"$gte": since}, "status": {"$in": ["rejected", "no_quorum"]}}},
        {"$group": {"_id": "$rejectedBy", "count": {"$sum": 1}}},
    ]
    return {row["_id"]: row["count"] async for row in await rounds().aggregate(pipeline)}


# ---------------------------------------------------------------- reading


async def find_round(key: str) -> dict[str, Any] | None:
    return await rounds().find_one({"key": key})


async def prediction_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of predictions, newest first."""
    return await keyset_page(
        predictions(),
        query,
        PREDICTION_SORT,
        limit=limit,
        after=after,
        projection=None,
        max_time_ms=max_time_ms,
    )


async def round_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of rounds, latest window first."""
    return await keyset_page(
        rounds(), query, ROUND_SORT, limit=limit, after=after, projection=None, max_time_ms=max_time_ms
    )


async def find_by_idempotency_key(operator: str, key: str) -> dict[str, Any] | None:
    return await predictions().find_one({"operator": operator, "idempotencyKey": key})


async def insert_prediction(document: dict[str, Any]) -> None:
    await predictions().insert_one(document)
