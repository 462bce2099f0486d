"""Every query of the market domain: `transactions`, their upserts, keyset pages and sales aggregation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from beanie.odm.utils.encoder import Encoder
from bson import Decimal128
from pymongo import DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.lib.db import in_slices
from app.lib.pagination import Position, Sort, keyset_page
from app.market.documents import Transaction

TX_SORT = Sort("timestamp", -1)
_ZERO = Decimal128("0")
# What the chain fixed is written once; the rest may advance.
_IMMUTABLE = (
    "type",
    "tokenId",
    "assetId",
    "price",
    "priceWei",
    "priceUsd",
    "seller",
    "buyer",
    "parties",
    "timestamp",
)
_MUTABLE = ("status", "platformFee", "platformFeeWei", "paymentMethod")


def transactions_collection():
    return Transaction.get_pymongo_collection()


def _parts(transaction: Transaction) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(hash, fields written once, fields that may advance) of a transaction, as Beanie stores it: wei as
    Decimal128, the hash lower-cased."""
    data = Encoder().encode(transaction)
    chain = data.pop("blockchain")
    tx_hash = chain["transactionHash"].lower()
    on_insert = {key: data[key] for key in _IMMUTABLE}
    on_insert["blockchain.transactionHash"] = tx_hash
    changes = {key: data[key] for key in _MUTABLE}
    for key in ("blockNumber", "blockHash", "logIndex", "gasUsed", "gasPriceWei"):
        if chain.get(key) is not None:
            changes[f"blockchain.{key}"] = chain[key]
    return tx_hash, on_insert, changes


async def upsert(transaction: Transaction) -> bool:
    """Upsert by transaction hash (lower-cased): the immutable fields on insert, status and fees always.

    Returns whether this call inserted it. An upsert race on the unique hash index surfaces as E11000:
    retried once.
    """
    tx_hash, on_insert, changes = _parts(transaction)
    for attempt in range(2):
        try:
            result = await transactions_collection().update_one(
                {"blockchain.transactionHash": tx_hash, "tokenId": transaction.tokenId},
                {"$setOnInsert": on_insert, "$set": changes},
                upsert=True,
            )
            break
        except DuplicateKeyError:
            if attempt:
                raise
    return result.upserted_id is not None


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as the nested document an upsert makes of them."""
    doc: dict[str, Any] = {}
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        target = doc
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return doc


def indexed_mark(transaction: Transaction) -> tuple[str | None, int | None, str]:
    """What can change of an indexed transaction once written: its block (a reorg may mine it again in
    another) and its status."""
    return transaction.blockchain.blockHash, transaction.blockchain.logIndex, transaction.status


def indexed_writes(
    transactions: list[Transaction], known: dict[tuple[str, int], tuple[str | None, int | None, str]]
) -> tuple[list[tuple[Transaction, dict[str, Any]]], list[UpdateOne]]:
    """The indexer's transactions that differ from what is `known` of them (`indexed_rows`): (those to
    insert, each with its document, and the updates of those mined again in another block or with a
    new status). A pass over a token with a long history so writes, and encodes, what changed, not the
    whole history again."""
    inserts, updates = [], []
    for transaction in transactions:
        have = known.get((transaction.blockchain.transactionHash.lower(), transaction.tokenId))
        if have == indexed_mark(transaction):
            continue
        tx_hash, on_insert, changes = _parts(transaction)
        if have is None:
            inserts.append((transaction, _nested({**on_insert, **changes})))
            continue
        # Mined again in another block: its time is that block's, whatever was written first.
        changes["timestamp"] = on_insert["timestamp"]
        query = {"blockchain.transactionHash": tx_hash, "tokenId": transaction.tokenId}
        updates.append(UpdateOne(query, {"$set": changes}))
    return inserts, updates


async def insert_indexed(inserts: list[tuple[Transaction, dict[str, Any]]]) -> tuple[int, set[int]]:
    """Insert new indexed transactions (with their documents, from `indexed_writes`) in one batch: (how
    many, the tokens of those the database refused). One the API recorded first under the same hash
    is merged as `upsert` merges it."""
    if not inserts:
        return 0, set()
    refused: set[int] = set()
    try:
        await transactions_collection().insert_many([doc for _, doc in inserts], ordered=False)
    except BulkWriteError as exc:
        if exc.details.get("writeConcernErrors"):
            raise
        for error in exc.details.get("writeErrors", []):
            transaction = inserts[error["index"]][0]
            if error.get("code") == 11000:
                await upsert(transaction)
            else:
                refused.add(transaction.tokenId)
    return len(inserts), refused


async def update_indexed(updates: list[UpdateOne]) -> int:
    if not updates:
        return 0
    await transactions_collection().bulk_write(updates, ordered=False)
    return len(updates)


async def backfill_parties(batch: int = 500) -> int:
    """Give `parties` to transactions written before it existed (idempotent); returns how many changed."""
    collection = transactions_collection()
    changed = 0
    while True:
        docs = await collection.find(
            {"parties": {"$exists": False}}, {"seller": 1, "buyer": 1}, limit=batch
        ).to_list()
        if not docs:
            return changed
        ops = [
            UpdateOne(
                {"_id": d["_id"]},
                {"$set": {"parties": [p for p in dict.fromkeys((d.get("seller"), d.get("buyer"))) if p]}},
            )
            for d in docs
        ]
        changed += (await collection.bulk_write(ops, ordered=False)).modified_count


def transaction_query(
    *,
    type: str | None = None,
    token_id: int | None = None,
    wallet: str | None = None,
    status: str | None = None,
    window: dict[str, datetime] | None = None,
) -> dict[str, Any]:
    """The filter for checked values (None: no condition); `window` bounds the timestamp."""
    query: dict[str, Any] = {}
    if type is not None:
        query["type"] = type
    if token_id is not None:
        query["tokenId"] = token_id
    if status is not None:
        query["status"] = status
    if window:
        query["timestamp"] = window
    if wallet is not None:
        query["parties"] = wallet  # seller or buyer: one multikey index, where an $or scanned everything
    return query


async def list_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of transactions, newest first, by (timestamp, _id)."""
    return await keyset_page(
        transactions_collection(),
        query,
        TX_SORT,
        limit=limit,
        after=after,
        projection=None,
        max_time_ms=max_time_ms,
    )


async def sales_totals(
    now: datetime, windows: dict[str, timedelta], sale_types: tuple[str, ...], max_time_ms: int
) -> dict[str, Any]:
    """Completed sales in each window before `now` and in the window before it, in one aggregation:
    `{name}volume`, `{name}wei`, `{name}sales`, and the same prefixed `prev` for the earlier window."""
    longest = max(windows.values())
    group: dict[str, Any] = {"_id": None}
    for name, span in windows.items():
        current = {"$gte": ["$timestamp", now - span]}
        previous = {"$and": [{"$gte": ["$timestamp", now - 2 * span]}, {"$lt": ["$timestamp", now - span]}]}
        for label, condition in (("", current), ("prev", previous)):
            group[f"{label}{name}volume"] = {"$sum": {"$cond": [condition, {"$ifNull": ["$price", 0]}, 0]}}
            group[f"{label}{name}wei"] = {
                "$sum": {"$cond": [condition, {"$ifNull": ["$priceWei", _ZERO]}, _ZERO]}
            }
            group[f"{label}{name}sales"] = {"$sum": {"$cond": [condition, 1, 0]}}
    pipeline = [
        {
            "$match": {
                "type": {"$in": list(sale_types)},
                "status": "completed",
                "timestamp": {"$gte": now - 2 * longest, "$lt": now},
            }
        },
        {"$group": group},
    ]
    rows = await (await transactions_collection().aggregate(pipeline, maxTimeMS=max_time_ms)).to_list()
    return rows[0] if rows else {}


# ---------------------------------------------------------------- sales, for the oracle

SALE_TYPES = ("buy", "sell")


async def sales_of(token_ids: list[int], *, since: datetime | None = None) -> list[dict[str, Any]]:
    """The completed sales (buy and sell, priced) of these tokens, oldest first, since `since`."""
    projection = {"tokenId": 1, "timestamp": 1, "priceWei": 1, "blockchain.transactionHash": 1}
    found: list[dict[str, Any]] = []
    for part in in_slices(sorted(token_ids)):
        query: dict[str, Any] = {
            "tokenId": {"$in": part},
            "type": {"$in": list(SALE_TYPES)},
            "status": "completed",
            "priceWei": {"$ne": None},
        }
        if since is not None:
            query["timestamp"] = {"$gt": since}
        cursor = transactions_collection().find(query, projection).sort([("tokenId", 1), ("timestamp", 1)])
        found += await cursor.to_list(None)
    return found


async def tokens_sold_since(since: datetime | None) -> list[int]:
    """The tokens with a completed sale after `since` (every one sold when None)."""
    query: dict[str, Any] = {"type": {"$in": list(SALE_TYPES)}, "status": "completed"}
    if since is not None:
        query["timestamp"] = {"$gt": since}
    return sorted(await transactions_collection().distinct("tokenId", query))


async def indexed_rows(token_ids: list[int]) -> dict[tuple[str, int], tuple[str | None, int | None, str]]:
    """The transactions of these tokens that the chain indexer wrote: (hash, token) and what may change
    of each (`indexed_mark`)."""
    found: dict[tuple[str, int], tuple[str | None, int | None, str]] = {}
    projection = {
        "tokenId": 1,
        "status": 1,
        "blockchain.transactionHash": 1,
        "blockchain.blockHash": 1,
        "blockchain.logIndex": 1,
    }
    for part in in_slices(sorted(token_ids)):
        query = {"tokenId": {"$in": part}, "blockchain.logIndex": {"$type": ["int", "long"]}}
        async for doc in transactions_collection().find(query, projection):
            chain = doc["blockchain"]
            found[(chain["transactionHash"], doc["tokenId"])] = (
                chain.get("blockHash"),
                chain.get("logIndex"),
                doc.get("status"),
            )
    return found


async def delete_rows(rows: list[tuple[str, int]]) -> int:
    """Delete these (hash, token) transactions."""
    if not rows:
        return 0
    operations = [DeleteOne({"blockchain.transactionHash": h, "tokenId": t}) for h, t in rows]
    return (await transactions_collection().bulk_write(operations, ordered=False)).deleted_count


async def complete_indexed(final_block: int) -> int:
    """Indexed transactions whose block is final are `completed`."""
    result = await transactions_collection().update_many(
        {
            "status": "pending",
            "blockchain.logIndex": {"$type": ["int", "long"]},
            "blockchain.blockNumber": {"$lte": final_block},
        },
        {"$set": {"status": "completed"}},
    )
    return result.modified_count
