"""Queries of the chain domain's collections."""

from __future__ import annotations

import contextlib
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from app.chain.documents import DeploymentLog, OutboxTransaction
from app.lib.timeutil import utcnow

DUPLICATE_KEY = 11000


def deployments():
    return DeploymentLog.get_pymongo_collection()


async def latest_deployment(
    contract: str, chain_id: int, *, status: str | None = None
) -> dict[str, Any] | None:
    """The most recent deployment of a contract on a chain (of that status, when given)."""
    query: dict[str, Any] = {"contract": contract, "chainId": chain_id}
    if status is not None:
        query["status"] = status
    return await deployments().find_one(query, sort=[("createdAt", DESCENDING)])


async def record_deployment(document: dict[str, Any]) -> ObjectId:
    now = utcnow()
    return (await deployments().insert_one({**document, "createdAt": now, "updatedAt": now})).inserted_id


async def update_deployment(log_id: ObjectId, **fields: Any) -> None:
    await deployments().update_one({"_id": log_id}, {"$set": {**fields, "updatedAt": utcnow()}})


# ---------------------------------------------------------------- outbox


def outbox():
    return OutboxTransaction.get_pymongo_collection()


async def add_intent(document: dict[str, Any]) -> dict[str, Any]:
    """Insert an outbox entry, or find the one with its key: asking twice asks once."""
    now = utcnow()
    with contextlib.suppress(DuplicateKeyError):
        await outbox().insert_one({**document, "createdAt": now, "updatedAt": now})
    return await outbox().find_one({"key": document["key"]})


async def entries(status: str, chain_id: int, sender: str, limit: int) -> list[dict[str, Any]]:
    """The oldest entries in a status (signed and later: by nonce, the order the chain takes them)."""
    order = [("createdAt", ASCENDING)] if status == "intent" else [("nonce", ASCENDING)]
    query = {"status": status, "chainId": chain_id, "sender": sender}
    return await outbox().find(query).sort(order).limit(limit).to_list(limit)


async def highest_nonce(chain_id: int, sender: str) -> int | None:
    found = await outbox().find_one(
        {"chainId": chain_id, "sender": sender, "nonce": {"$type": ["int", "long"]}},
        {"nonce": 1},
        sort=[("nonce", DESCENDING)],
    )
    return None if found is None else int(found["nonce"])


async def move(entry_id: ObjectId, status: str, to: str, **fields: Any) -> bool:
    """Move an entry from `status` to `to` (with `fields`) unless another process moved it first."""
    result = await outbox().update_one(
        {"_id": entry_id, "status": status}, {"$set": {**fields, "status": to, "updatedAt": utcnow()}}
    )
    return result.modified_count == 1


async def take_nonce(entry_id: ObjectId, nonce: int, fields: dict[str, Any]) -> bool:
    """Sign an intent with `nonce`: DuplicateKeyError when another entry holds it."""
    return await move(entry_id, "intent", "signed", nonce=nonce, **fields)


async def add_attempt(
    entry_id: ObjectId, current_hash: str, attempt: dict[str, Any], *, status: str = "sent", **fields: Any
) -> bool:
    """Record a replacement, unless the entry has moved on since `current_hash` was its latest."""
    result = await outbox().update_one(
        {"_id": entry_id, "status": status, "txHash": current_hash},
        {
            "$push": {"attempts": attempt},
            "$set": {**fields, "txHash": attempt["txHash"], "updatedAt": utcnow()},
        },
    )
    return result.modified_count == 1


async def requeue(entry: dict[str, Any], reason: str) -> bool:
    """Back to `intent` with no nonce: its nonce went to a transaction that is not its own. The attempts
    read are kept apart (`abandoned`); an entry changed since it was read is left alone."""
    result = await outbox().update_one(
        {"_id": entry["_id"], "status": "sent", "txHash": entry["txHash"]},
        {
            "$set": {
                "status": "intent",
                "error": reason,
                "attempts": [],
                "txHash": None,
                "sendErrors": 0,
                "updatedAt": utcnow(),
            },
            "$push": {"abandoned": {"$each": entry["attempts"]}},
            "$unset": {"nonce": "", "sentBlock": ""},
        },
    )
    return result.modified_count == 1


async def holding_nonces(chain_id: int, sender: str, lowest: int) -> list[dict[str, Any]]:
    """The sender's entries holding a nonce from `lowest` up."""
    query = {"chainId": chain_id, "sender": sender, "nonce": {"$gte": lowest}}
    projection = {"nonce": 1, "status": 1, "txHash": 1, "attempts.txHash": 1}
    return await outbox().find(query, projection).to_list(None)


async def release_nonces(entries: list[dict[str, Any]], reason: str) -> int:
    """Fail these entries, unless moved since they were read, and free their nonces (kept as
    `lostNonce`)."""
    released = 0
    for found in entries:
        result = await outbox().update_one(
            {
                "_id": found["_id"],
                "nonce": found["nonce"],
                "status": found["status"],
                "txHash": found.get("txHash"),
            },
            {
                "$set": {
                    "status": "failed",
                    "error": reason,
                    "lostNonce": found["nonce"],
                    "updatedAt": utcnow(),
                },
                "$unset": {"nonce": ""},
            },
        )
        released += result.modified_count
    return released


async def mark_sent(entry_id: ObjectId, tx_hash: str, head: int) -> bool:
    result = await outbox().update_one(
        {"_id": entry_id, "status": "signed", "txHash": tx_hash},
        {
            "$set": {
                "status": "sent",
                "sentBlock": head,
                "error": None,
                "sendErrors": 0,
                "updatedAt": utcnow(),
            }
        },
    )
    return result.modified_count == 1


async def send_refused(entry_id: ObjectId, error: str, *, priced: bool) -> None:
    """A send the node refused: its reason kept (`refusal`); refusals of anything but the price counted
    towards a cancel."""
    changes: dict[str, Any] = {"$set": {"error": error, "refusal": error, "updatedAt": utcnow()}}
    if not priced:
        changes["$inc"] = {"sendErrors": 1}
    await outbox().update_one({"_id": entry_id}, changes)


async def find_entry(key: str) -> dict[str, Any] | None:
    return await outbox().find_one({"key": key})


# ---------------------------------------------------------------- status


async def open_by_status(chain_id: int, statuses: tuple[str, ...]) -> dict[str, int]:
    pipeline = [
        {"$match": {"chainId": chain_id, "status": {"$in": list(statuses)}}},
        {"$group": {"_id": "$status", "count": {"$sum": 1}}},
    ]
    return {row["_id"]: row["count"] async for row in await outbox().aggregate(pipeline)}
