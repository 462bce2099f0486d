"""The queries of what the chain decides about assets: their chain state, mints and sale points.

The chain indexer (through app/assets/chain_state.py) and the mint sweep (app/assets/onchain.py) are
their only writers; kept apart from repository.py, which holds the assets' own reads and writes.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import BulkWriteError

from app.assets.documents import Asset, PriceHistory
from app.lib.db import in_slices


def assets_collection():
    return Asset.get_pymongo_collection()


def history_collection():
    return PriceHistory.get_pymongo_collection()


async def write_chain_states(
    asset_updates: list[tuple[int, Any]], point_writes: list[tuple[int, Any]]
) -> tuple[int, list[tuple[int, str]]]:
    """The chain's state onto assets, and their sale points, each write for its token: (how many assets
    changed, (token, error) of each write the database refused). Unordered, so that one refused write
    does not hold back the others' tokens."""
    changed, failed = await _unordered(assets_collection(), asset_updates)
    _, failed_points = await _unordered(history_collection(), point_writes)
    return changed, failed + failed_points


async def _unordered(collection, writes: list[tuple[int, Any]]) -> tuple[int, list[tuple[int, str]]]:
    if not writes:
        return 0, []
    try:
        return (await collection.bulk_write([op for _, op in writes], ordered=False)).modified_count, []
    except BulkWriteError as exc:
        if exc.details.get("writeConcernErrors"):
            raise
        errors = exc.details.get("writeErrors", [])
        refused = [(writes[e["index"]][0], str(e.get("errmsg"))[:300]) for e in errors]
        return exc.details.get("nModified", 0), refused


async def sale_points(token_ids: list[int]) -> dict[int, dict[Any, tuple[Any, ...]]]:
    """The chain's sale points of these tokens: token -> point id -> (transaction, block, time)."""
    found: dict[int, dict[Any, tuple[Any, ...]]] = {}
    projection = {"tokenId": 1, "blockchain": 1}
    for part in in_slices(sorted(token_ids)):
        query = {"tokenId": {"$in": part}, "source.type": "sale", "blockchain": {"$ne": None}}
        async for doc in history_collection().find(query, projection):
            chain = doc["blockchain"]
            mark = (chain.get("transactionHash"), chain.get("blockNumber"), chain.get("timestamp"))
            found.setdefault(doc["tokenId"], {})[doc["_id"]] = mark
    return found


async def confirm_mints(final_block: int) -> int:
    result = await assets_collection().update_many(
        {"chain.status": "minted", "chain.block": {"$lte": final_block}},
        {"$set": {"chain.status": "confirmed"}},
    )
    return result.modified_count


async def pending_mints(after: int, limit: int) -> list[dict[str, Any]]:
    """Assets whose mint was asked for and is not on the chain yet, by tokenId after `after`."""
    projection = {"tokenId": 1, "contractAddress": 1, "ownership.currentOwner": 1}
    query = {"chain.status": "pending", "tokenId": {"$gt": after}}
    return await assets_collection().find(query, projection).sort("tokenId", 1).limit(limit).to_list(limit)


async def fail_mint(token_id: int, error: str) -> None:
    await assets_collection().update_one(
        {"tokenId": token_id, "chain.status": "pending"},
        {"$set": {"chain.status": "failed", "chain.error": error[:300]}},
    )


async def tokens_of_contract(token_ids: list[int], contract: str) -> set[int]:
    """Which of these tokens are assets of `contract`."""
    found: set[int] = set()
    for part in in_slices(sorted(token_ids)):
        query = {"tokenId": {"$in": part}, "contractAddress": contract}
        found |= {doc["tokenId"] async for doc in assets_collection().find(query, {"tokenId": 1})}
    return found


async def minted_sample(contract: str, size: int) -> list[dict[str, Any]]:
    """A random sample of the assets minted on `contract`, with their owner and listing."""
    pipeline = [
        {"$match": {"contractAddress": contract, "chain.status": {"$in": ["minted", "confirmed"]}}},
        {"$sample": {"size": size}},
        {"$project": {"tokenId": 1, "ownership": 1, "marketStatus": 1}},
    ]
    return await (await assets_collection().aggregate(pipeline)).to_list(size)
