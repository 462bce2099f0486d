"""Every query of the pushes of rounds to the PriceOracle (app/oracle/publication.py): the rounds decided
`published`, their push, and its settling."""

from __future__ import annotations

from typing import Any

from pymongo import UpdateOne

from app.lib.db import in_slices
from app.oracle.round_repository import ACCEPTED, predictions, rounds

# A push is settled once it is one of these: its rounds' accepted predictions are `submitted` until then.
SETTLED = ("accepted", "failed", "superseded", "expired")


async def undecided_publications(limit: int) -> list[dict[str, Any]]:
    """Rounds decided `published` whose push is not asked for yet, oldest first."""
    query = {"decision.decision": "published", "publication.status": None}
    projection = {"key": 1, "tokenId": 1, "answer": 1, "closesAt": 1}
    return await rounds().find(query, projection).sort("closesAt", 1).limit(limit).to_list(limit)


async def start_publication(pushes: list[tuple[str, dict[str, Any]]]) -> int:
    """Record the push of these rounds, once: a round keeps the push it was first given."""
    operations = [
        UpdateOne({"key": key, "publication": None}, {"$set": {"publication": p}}) for key, p in pushes
    ]
    if not operations:
        return 0
    return (await rounds().bulk_write(operations, ordered=False)).modified_count


async def submitted(limit: int) -> list[dict[str, Any]]:
    query = {"decision.decision": "published", "publication.status": "submitted"}
    return await rounds().find(query, {"publication": 1, "tokenId": 1}).limit(limit).to_list(limit)


async def published_in(outbox_key: str) -> list[dict[str, Any]]:
    """The rounds one push carries, by its outbox key."""
    projection = {"key": 1, "tokenId": 1, "answer": 1, "publication": 1}
    query = {"decision.decision": "published", "publication.outboxKey": outbox_key}
    return await rounds().find(query, projection).to_list(None)


async def finish_publication(keys: list[str], changes: dict[str, Any]) -> int:
    """Settle these rounds' push (a round settles once), then the predictions they accepted."""
    if not keys:
        return 0
    result = await rounds().update_many(
        {"key": {"$in": keys}, "publication.status": "submitted"},
        {"$set": {f"publication.{name}": value for name, value in changes.items()}},
    )
    await settle_predictions(keys)
    return result.modified_count


async def settle_predictions(keys: list[str] | None = None) -> int:
    """The predictions of these rounds (None: of every round with one still `submitted`, which a crash
    between a round's settling and its predictions' leaves) once the round's push has settled:
    `accepted`, with the on-chain reference the round recorded, none when its answer never landed."""
    if keys is None:
        keys = await predictions().distinct("round", {"status": "submitted"})
    settled = 0
    for part in in_slices(sorted(keys)):
        query = {"key": {"$in": part}, "publication.status": {"$in": SETTLED}}
        async for found in rounds().find(query, {"key": 1, "publication": 1}):
            reference = found["publication"].get("onChainReference")
            result = await predictions().update_many(
                {
                    "round": found["key"],
                    "status": {"$in": ACCEPTED},
                    "onChainReference": None,
                },
                {"$set": {"status": "accepted", "onChainReference": reference}},
            )
            settled += result.modified_count
    return settled


async def accepted_sample(size: int) -> list[dict[str, Any]]:
    """A random sample of tokens, each with its last accepted (final) push."""
    pipeline = [
        {"$match": {"publication.status": "accepted"}},
        {"$sort": {"tokenId": 1, "closesAt": -1}},
        {"$group": {"_id": "$tokenId", "last": {"$first": "$$ROOT"}}},
        {"$sample": {"size": size}},
        {"$replaceRoot": {"newRoot": "$last"}},
        {"$project": {"tokenId": 1, "answer": 1, "publication": 1}},
    ]
    return await (await rounds().aggregate(pipeline)).to_list(size)
