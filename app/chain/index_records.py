"""Queries of the indexer's collections: the chain's events, the recent blocks' hashes, and the cursor
(which also keeps the reconciliations' reports)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from pymongo import DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.chain.documents import ChainBlock, ChainEvent, IndexerCursor
from app.lib.db import in_slices
from app.lib.timeutil import utcnow

DUPLICATE_KEY = 11000


def events():
    return ChainEvent.get_pymongo_collection()


def blocks():
    return ChainBlock.get_pymongo_collection()


def cursors():
    return IndexerCursor.get_pymongo_collection()


async def indexer_cursor(chain_id: int) -> dict[str, Any] | None:
    return await cursors().find_one({"chainId": chain_id})


async def start_cursor(chain_id: int, block: int) -> dict[str, Any]:
    """Start the cursor at `block` unless it has started (the document may exist already, holding only
    drift reports)."""
    with contextlib.suppress(DuplicateKeyError):
        await cursors().update_one(
            {"chainId": chain_id, "block": None},
            {"$set": {"block": block, "hash": None, "lastReorg": None, "updatedAt": utcnow()}},
            upsert=True,
        )
    return await indexer_cursor(chain_id)


async def advance_cursor(
    chain_id: int, found: dict[str, Any], block: int, block_hash: str, tokens: list[int]
) -> bool:
    """Move the cursor on from where the pass `found` it (block and hash: a reorg may have rewound it to
    the same block) to `block`, and add the tokens read to those still to apply, in one write; only if
    it is still there (False otherwise): a pass that somehow ran beside another never moves the other's
    cursor back."""
    # Only the tokens not pending yet, pushed: `$addToSet` of thousands compares each with every one
    # already there. Pending tokens change under the indexer's lease, which this pass holds (one that
    # lost it is stopped, and its cursor move below fails).
    pending = set(await pending_tokens(chain_id))
    moved = await cursors().update_one(
        {"chainId": chain_id, "block": found["block"], "hash": found.get("hash")},
        {
            "$set": {"block": block, "hash": block_hash, "updatedAt": utcnow()},
            "$push": {"pending": {"$each": [token for token in tokens if token not in pending]}},
        },
    )
    return moved.matched_count == 1


async def pending_tokens(chain_id: int) -> list[int]:
    """The tokens read (or rolled back) and not applied yet."""
    found = await cursors().find_one({"chainId": chain_id}, {"pending": 1})
    return sorted(set((found or {}).get("pending") or []))


async def applied(chain_id: int, tokens: list[int]) -> None:
    if tokens:
        await cursors().update_one({"chainId": chain_id}, {"$pullAll": {"pending": tokens}})


async def rewind_cursor(chain_id: int, block: int, block_hash: str | None, reorg: dict[str, Any]) -> None:
    await cursors().update_one(
        {"chainId": chain_id},
        {"$set": {"block": block, "hash": block_hash, "lastReorg": reorg, "updatedAt": utcnow()}},
    )


async def save_events(found: list[dict[str, Any]]) -> None:
    """Store the events, keyed by (chain, block hash, tx, log index): a range read again adds nothing, and
    an event read again after a reorg removed it is live again. Inserted, not upserted: an upsert
    costs a lookup per event, and all but a re-read are new."""
    if not found:
        return
    try:
        await events().insert_many(found, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        again = [found[error["index"]] for error in errors]
        operations = [
            UpdateOne(
                {k: e[k] for k in ("chainId", "blockHash", "txHash", "logIndex")},
                {"$set": {"removed": False, "toAnnounce": e["toAnnounce"]}},
            )
            for e in again
        ]
        await events().bulk_write(operations, ordered=False)


async def save_blocks(chain_id: int, read: dict[int, tuple[str, str]], *, keep: int) -> None:
    """Record each block read, number -> (hash, parent hash), and forget all but the highest `keep`."""
    operations = [
        UpdateOne({"chainId": chain_id, "number": n}, {"$set": {"hash": h, "parentHash": p}}, upsert=True)
        for n, (h, p) in read.items()
    ]
    if operations:
        await blocks().bulk_write(operations, ordered=False)
    cursor = blocks().find({"chainId": chain_id}, {"number": 1}).sort("number", DESCENDING).skip(keep - 1)
    oldest = await cursor.limit(1).to_list(1)
    if oldest:
        await blocks().delete_many({"chainId": chain_id, "number": {"$lt": oldest[0]["number"]}})


async def recent_blocks(chain_id: int, *, below: int, limit: int) -> list[dict[str, Any]]:
    """The recorded blocks under `below`, highest first."""
    query = {"chainId": chain_id, "number": {"$lt": below}}
    return await blocks().find(query).sort("number", DESCENDING).limit(limit).to_list(limit)


async def block_hash(chain_id: int, number: int) -> str | None:
    found = await blocks().find_one({"chainId": chain_id, "number": number})
    return None if found is None else found["hash"]


async def live_block_at_or_below(chain_id: int, block: int, lowest: int) -> dict[str, Any] | None:
    """The highest live event's block number and hash in [lowest, block]."""
    query = {"chainId": chain_id, "removed": False, "blockNumber": {"$gte": lowest, "$lte": block}}
    projection = {"blockNumber": 1, "blockHash": 1}
    return await events().find_one(query, projection, sort=[("blockNumber", DESCENDING)])


def _live_after(chain_id: int, block: int) -> dict[str, Any]:
    return {"chainId": chain_id, "blockNumber": {"$gt": block}, "removed": False}


async def live_events_after(chain_id: int, block: int) -> bool:
    return await events().find_one(_live_after(chain_id, block), projection={"_id": 1}) is not None


async def remove_events_after(chain_id: int, fork: int) -> int:
    """Mark the events of blocks above `fork` removed; how many. The tokens they name (and those an
    owner's approval of all its tokens changes) join the cursor's `pending` first, so a crash after
    the marking still has them applied again."""
    query = _live_after(chain_id, fork)
    named = [t for t in await events().distinct("tokenId", query) if t is not None]
    owners = await events().distinct("args.owner", {**query, "event": "ApprovalForAll"})
    tokens = await touched_tokens(chain_id, named, owners)
    await cursors().update_one({"chainId": chain_id}, {"$addToSet": {"pending": {"$each": tokens}}})
    result = await events().update_many(
        query, {"$set": {"removed": True, "removedAt": utcnow(), "toAnnounce": True}}
    )
    return result.modified_count


async def to_announce(chain_id: int, limit: int) -> list[dict[str, Any]]:
    """Events that appeared or were removed since they were last announced: the removed ones, then the
    others, each in chain order."""
    query = {"chainId": chain_id, "toAnnounce": True}
    order = [("removed", -1), ("blockNumber", 1), ("logIndex", 1)]  # what a reorg took back first
    return await events().find(query, sort=order, limit=limit).to_list()


async def announced(marks: list[tuple[dict[str, Any], str | None]], *, settled: bool = True) -> int:
    """Record, in one bulk write, that each event (as read) was announced as its state (None: nothing to
    announce) and, when `settled`, that nothing is left to announce of it. An event that changed since
    it was read (a reorg) is left as it is, so it is looked at again; answers how many were marked."""
    writes = []
    for event, state in marks:
        unchanged = {
            "_id": event["_id"],
            "removed": event["removed"],
            "announcements": event.get("announcements", 0),
        }
        update: dict[str, Any] = {"$unset": {"toAnnounce": ""}} if settled else {}
        if state is not None:
            update |= {"$set": {"announced": state}, "$inc": {"announcements": 1}}
        if update:
            writes.append(UpdateOne(unchanged, update))
    if not writes:
        return 0
    return (await events().bulk_write(writes, ordered=False)).modified_count


async def drop_blocks_after(chain_id: int, fork: int) -> None:
    await blocks().delete_many({"chainId": chain_id, "number": {"$gt": fork}})


async def token_events(
    chain_id: int, token_ids: list[int], addresses: list[str], contracts: list[str]
) -> list[dict[str, Any]]:
    """The live (not removed) events of these tokens from these contracts (by name, and deployed at
    `addresses`), in chain order."""
    found: list[dict[str, Any]] = []
    # A query a contract on the fields of chainId_contract_token_block alone, the rest sifted here:
    # SecantusDB looks each token up in the index only for such a query, and scans the whole collection
    # for one with `contract` as `$in` or with any field the index lacks.
    wanted = set(addresses)
    for contract in contracts:
        for part in in_slices(sorted(token_ids)):
            query = {"chainId": chain_id, "contract": contract, "tokenId": {"$in": part}}
            async for event in events().find(query):
                if not event["removed"] and event["address"] in wanted:
                    found.append(event)
    return sorted(found, key=lambda e: (e["blockNumber"], e["logIndex"]))


async def touched_tokens(chain_id: int, named: Iterable[int], owners: Iterable[str]) -> list[int]:
    """The tokens some events change: those they name, and, for an owner's approval of all its tokens
    (which names none), the tokens that owner has listed."""
    owners = sorted(set(owners))
    listed = await tokens_listed_by(chain_id, owners) if owners else []
    return sorted(set(named) | set(listed))


async def tokens_listed_by(chain_id: int, sellers: list[str]) -> list[int]:
    """The tokens these sellers have a live `Listed` event of."""
    query = {"chainId": chain_id, "event": "Listed", "removed": False, "args.seller": {"$in": sellers}}
    return sorted(await events().distinct("tokenId", query))


async def operator_approvals(chain_id: int, owners: list[str], operator: str) -> dict[str, bool]:
    """Whether each of these owners has approved `operator` for all its tokens, by its latest live
    `ApprovalForAll` of that operator (none: not approved)."""
    query = {
        "chainId": chain_id,
        "event": "ApprovalForAll",
        "removed": False,
        "args.owner": {"$in": owners},
        "args.operator": operator,
    }
    found: dict[str, bool] = {}
    latest = events().find(query, {"args": 1}).sort([("blockNumber", 1), ("logIndex", 1)])
    async for event in latest:
        found[event["args"]["owner"]] = bool(event["args"]["approved"])
    return found


async def save_drift(chain_id: int, drift: dict[str, Any], kind: str) -> None:
    """Keep one reconciliation's report (`kind`: the market's owners and listings, the oracle's prices)."""
    await cursors().update_one({"chainId": chain_id}, {"$set": {f"drifts.{kind}": drift}}, upsert=True)


async def last_drift(chain_id: int) -> dict[str, Any] | None:
    """The latest reports of every kind as one: their counts by field and their items together."""
    found = await cursors().find_one({"chainId": chain_id}, {"drifts": 1})
    reports = list(((found or {}).get("drifts") or {}).values())
    if not reports:
        return None
    return {
        "at": max(report["at"] for report in reports),
        "block": max(report["block"] for report in reports),
        "sampled": sum(report["sampled"] for report in reports),
        "byField": {field: n for report in reports for field, n in report["byField"].items()},
        "items": [item for report in reports for item in report["items"]][:100],
    }


async def price_updates(chain_id: int, block_hash: str, tx_hash: str) -> set[tuple[int, int]]:
    """The (token, round) pairs of a transaction's live PriceUpdated events (its block leads the key)."""
    query = {
        "chainId": chain_id,
        "blockHash": block_hash,
        "txHash": tx_hash,
        "event": "PriceUpdated",
        "removed": False,
    }
    return {
        (doc["tokenId"], int(doc["args"]["roundId"]))
        async for doc in events().find(query, {"tokenId": 1, "args.roundId": 1})
    }
