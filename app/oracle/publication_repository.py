"""Every query of the pushes of rounds to the PriceOracle (app/oracle/publication.py): the rounds decided
`published`, their push, and its settling."""

from __future__ import annotations

from typing import Any

from pymongo import UpdateOne

from app.lib.db import in_slices
from app.oracle.round_repository import predictions, rounds

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
    """Settle these rounds' push, and then their accepted predictions: a crash between the two writes
    leaves the rounds `submitted`, so the next pass settles both again."""
    if not keys:
        return 0
    await settle_predictions(keys, changes.get("onChainReference"))
    result = await rounds().update_many(
        {"key": {"$in": keys}, "publication.status": "submitted"},
        {"$set": {f"publication.{name}": value for name, value in changes.items()}},
    )
    return result.modified_count


async def settle_predictions(keys: list[str], reference: dict[str, Any] | None = None) -> int:
    """The predictions these rounds accepted, once the rounds' push has settled: `accepted`, with the
    push's on-chain reference when it landed (without one when the answer never reached the chain)."""
    settled = 0
    for part in in_slices(sorted(keys)):
        result = await predictions().update_many(
            {"round": {"$in": part}, "status": {"$in": ["submitted", "accepted"]}},
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
