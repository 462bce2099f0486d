"""Transactions and market figures: recording what the chain did, listing it, and the cached stats.

Every figure is computed by MongoDB aggregations (`stats`); every query is in `repository`. The
catalog's part of the stats comes from the assets service: market depends on assets, never the reverse.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from app.config import Settings
from app.events import service as events_service
from app.lib import leases
from app.lib.errors import BadRequest, require_one_of
from app.lib.money import wei_string
from app.lib.params import MAX_INT64, parse_limit, signed_page
from app.lib.timeutil import as_utc, client_time
from app.market import announcing, indexing, reconcile, repository, schemas, stats
from app.market.documents import Transaction


async def invalidate_stats(redis) -> None:
    """Call after a committed write that changes the sales figures (a sale, or anything else the stats
    count that the assets service does not own): the cached figures are recomputed on the next read."""
    await stats.invalidate(redis)


async def record_transaction(redis, transaction: Transaction) -> bool:
    """Upsert by transaction hash: writing the same transaction twice changes nothing.

    What the chain fixed (parties, price, time) is written once; status and fees may advance. Returns
    whether this call inserted it.
    """
    inserted = await repository.upsert(transaction)
    await invalidate_stats(redis)
    return inserted


INDEX_LOCK = "market:index_chain:lock"
# Renewed while a pass runs (app/lib/leases.py): how long a killed worker's pass holds up the next.
INDEX_LEASE_MS = 30_000


async def index_chain(clients, settings: Settings) -> dict[str, Any]:
    """Read the next range of the chain's events and apply them to transactions, owners and listings;
    one pass at a time (a Redis lease), as two overlapping passes could each undo the other's work."""
    async with leases.lease(clients.redis, INDEX_LOCK, INDEX_LEASE_MS) as held:
        if not held:
            return {"skipped": "another pass is running"}
        result = await indexing.index_chain(clients, settings)
    if result.get("transactions") or result.get("deleted") or result.get("completed"):
        await invalidate_stats(clients.redis)
    return result


async def announce_chain(clients, settings: Settings) -> dict[str, Any]:
    """Announce to the stream what the indexed events changed, in a job of its own rather than at the end
    of each pass, so that a pass's writes are never held back by the stream's outbox. Each batch holds
    the indexer's lease: beside a pass it could see that pass's writes half done (the new branch's
    events stored, the old ones not yet marked removed) and announce them out of chain order. Between
    batches a pass may go on, so a backlog delays indexing by one batch at most; then the events are
    published, outside the lease."""
    announced, batches = 0, 0
    for _ in range(announcing.MAX_ROUNDS):
        async with leases.lease(clients.redis, INDEX_LOCK, INDEX_LEASE_MS) as held:
            found = await announcing.announce_batch(settings) if held else None
        if found is None:
            break
        announced, batches = announced + found, batches + 1
    if announced:
        await events_service.dispatch_soon(clients, settings)
    return {"announced": announced, "batches": batches}


async def reconcile_chain(clients, settings: Settings) -> dict[str, Any]:
    """Compare a sample of tokens on the chain with MongoDB, and keep the drift found."""
    return await reconcile.reconcile(clients, settings)


async def sales_of(token_ids: list[int], *, since: datetime | None = None) -> dict[int, list[tuple]]:
    """The completed sales of these tokens, per token, oldest first: (time, price in wei, source)."""
    sales: dict[int, list[tuple]] = {}
    for doc in await repository.sales_of(token_ids, since=since):
        tx_hash = (doc.get("blockchain") or {}).get("transactionHash")
        sales.setdefault(doc["tokenId"], []).append(
            (as_utc(doc["timestamp"]), int(doc["priceWei"].to_decimal()), f"chain:{tx_hash}")
        )
    return sales


async def tokens_sold_since(since: datetime | None) -> list[int]:
    """The tokens sold (completed buy or sell) after `since`."""
    return await repository.tokens_sold_since(since)


async def backfill_parties() -> int:
    """Give `parties` to transactions written before it existed (idempotent); returns how many changed."""
    return await repository.backfill_parties()


def transaction_filter(filters: schemas.TransactionQuery) -> dict[str, Any]:
    """The query for these filters, each checked first (nothing a client sends becomes a query)."""
    type, token_id, status, start, end = (
        filters.type,
        filters.token_id,
        filters.status,
        filters.start,
        filters.end,
    )
    if type is not None:
        require_one_of(type, schemas.TRANSACTION_TYPES, field="type", code="invalid_type")
    if token_id is not None and not 0 <= token_id <= MAX_INT64:
        raise BadRequest("tokenId must be an integer from 0 to 2^63-1", code="invalid_token_id")
    if status is not None:
        require_one_of(status, schemas.TRANSACTION_STATUSES, field="status", code="invalid_status")
    window: dict[str, datetime] = {}
    if start is not None:
        window["$gte"] = client_time(start, "from")
    if end is not None:
        window["$lt"] = client_time(end, "to")
    if start is not None and end is not None and window["$gte"] >= window["$lt"]:
        raise BadRequest("from must be before to", code="invalid_range")
    return repository.transaction_query(
        type=type, token_id=token_id, wallet=filters.wallet, status=status, window=window
    )


def _item(doc: dict[str, Any]) -> schemas.TransactionItem:
    chain = doc.get("blockchain") or {}
    return schemas.TransactionItem(
        id=str(doc["_id"]),
        type=doc["type"],
        tokenId=doc["tokenId"],
        price=doc.get("price"),
        priceWei=wei_string(doc.get("priceWei")),
        priceUsd=doc.get("priceUsd"),
        seller=doc.get("seller"),
        buyer=doc.get("buyer"),
        timestamp=doc["timestamp"],
        status=doc.get("status", "pending"),
        platformFee=doc.get("platformFee"),
        platformFeeWei=wei_string(doc.get("platformFeeWei")),
        paymentMethod=doc.get("paymentMethod"),
        transactionHash=chain.get("transactionHash"),
        blockNumber=chain.get("blockNumber"),
        gasUsed=chain.get("gasUsed"),
        gasPriceWei=wei_string(chain.get("gasPriceWei")),
    )


async def list_transactions(settings: Settings, asked: schemas.TransactionQuery) -> schemas.TransactionPage:
    """Transactions matching the filters, newest first, keyset-paged by (timestamp, _id)."""
    query = transaction_filter(asked)
    size = parse_limit(asked.limit)
    secret = settings.auth.jwt_secret.get_secret_value()
    fetch = partial(repository.list_page, query, limit=size, max_time_ms=settings.mongodb.max_time_ms)
    docs, next_cursor = await signed_page(secret, "transactions", asked.cursor, fetch)
    return schemas.TransactionPage(items=[_item(doc) for doc in docs], nextCursor=next_cursor, limit=size)


async def market_stats(clients, settings: Settings) -> bytes:
    """The market figures as the JSON of schemas.MarketStats: cached until a write changes them,
    recomputed by one request at a time."""
    return await stats.market_stats(clients, settings)
