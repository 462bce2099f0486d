"""What the chain decides about an asset, written by the market's indexing of the chain's events.

For an asset of the platform's AssetToken the chain is the truth about its owner, its listing, its
mint and its sales: each pass gives every token it touched its whole state again, rebuilt from the
live events (see app/market/indexing.py), so a state is replaced, never patched, and a reorg undoes
itself. An asset of another contract is never touched. Sale points in the price history are keyed by
the sale's transaction and log index, and those of sales no longer on the chain are deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import DeleteMany, UpdateOne

from app.assets import chain_records as repository
from app.lib.money import wei_to_eth

minted_sample = repository.minted_sample  # for the reconciliation of MongoDB with the chain


@dataclass(frozen=True)
class ChainListing:
    price_wei: int
    listed_at: datetime
    seller: str


@dataclass(frozen=True)
class ChainSale:
    point_key: str  # "<tx hash>:<log index>"
    price_wei: int
    at: datetime
    tx_hash: str
    block: int


@dataclass(frozen=True)
class ChainState:
    """A token's state as its live events give it."""

    token_id: int
    contract: str | None  # the AssetToken the events are of
    owner: str | None = None
    owner_since: datetime | None = None
    listing: ChainListing | None = None
    has_market_events: bool = False
    mint_tx: str | None = None
    mint_block: int | None = None
    mint_final: bool = False
    sales: Sequence[ChainSale] = field(default_factory=tuple)


def sale_point_id(point_key: str) -> ObjectId:
    return ObjectId(hashlib.sha256(f"sale:{point_key}".encode()).digest()[:12])


def _set(state: ChainState) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if state.owner is not None:
        changes["ownership.currentOwner"] = state.owner
        changes["ownership.ownerSince"] = state.owner_since
    listing = state.listing
    changes["marketStatus"] = {
        "isListed": listing is not None,
        "listingPrice": wei_to_eth(listing.price_wei) if listing else None,
        "listingPriceWei": Decimal128(str(listing.price_wei)) if listing else None,
        "listedAt": listing.listed_at if listing else None,
        "listedBy": listing.seller if listing else None,
    }
    if state.mint_tx is not None:
        # The whole record, not its fields: an asset onboarded while the chain was off has none to set
        # fields in, and a failed write there would hold every token of the pass back.
        changes["chain"] = {
            "contractAddress": state.contract,
            "mintTx": state.mint_tx,
            "block": state.mint_block,
            "status": "confirmed" if state.mint_final else "minted",
        }
    return changes


async def apply(states: Sequence[ChainState]) -> int:
    """Write each token's chain state onto its asset, and its sale points; how many assets changed."""
    operations, point_writes = [], []
    contract = next((state.contract for state in states if state.contract), None)
    ours = (
        await repository.tokens_of_contract([state.token_id for state in states], contract)
        if contract
        else set()
    )
    points = await repository.sale_points([state.token_id for state in states if state.token_id in ours])
    for state in states:
        if state.contract is None or state.token_id not in ours:
            continue
        query: dict[str, Any] = {"tokenId": state.token_id, "contractAddress": state.contract}
        if state.mint_tx is None:
            # A mint a reorg took away: the asset waits for it again.
            operations.append(
                UpdateOne(
                    {**query, "chain.status": {"$in": ["minted", "confirmed"]}},
                    {"$set": {"chain.status": "pending", "chain.mintTx": None, "chain.block": None}},
                )
            )
        operations.append(UpdateOne(query, {"$set": _set(state)}))
        # Only what changed is written: a token with many sales costs its new sales, not all of them.
        keep = {sale_point_id(sale.point_key): sale for sale in state.sales}
        written = points.get(state.token_id, {})
        stale = [point for point in written if point not in keep]
        if stale:
            point_writes.append(DeleteMany({"_id": {"$in": stale}}))
        for point_id, sale in keep.items():
            if written.get(point_id) == (sale.tx_hash, sale.block, sale.at):
                continue
            point = {
                "tokenId": state.token_id,
                "price": wei_to_eth(sale.price_wei),
                "priceWei": Decimal128(str(sale.price_wei)),
                "priceUsd": None,
                "timestamp": sale.at,
                "source": {"type": "sale", "dataSourceName": None, "modelVersion": None},
                "aiMetrics": None,
                "blockchain": {
                    "transactionHash": sale.tx_hash,
                    "blockNumber": sale.block,
                    "timestamp": sale.at,
                },
            }
            point_writes.append(UpdateOne({"_id": point_id}, {"$set": point}, upsert=True))
    return await repository.write_chain_states(operations, point_writes)


async def confirm(final_block: int) -> int:
    """Mints whose block is now final are `confirmed`."""
    return await repository.confirm_mints(final_block)
