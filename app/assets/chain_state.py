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

import structlog
from bson import Decimal128, ObjectId
from pymongo import DeleteMany, UpdateOne

from app.assets import chain_records as repository
from app.lib.money import wei_to_eth

log = structlog.get_logger("assets.chain_state")
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


async def apply(states: Sequence[ChainState]) -> tuple[int, set[int]]:
    """Write each token's chain state onto its asset, and its sale points: (how many assets changed, the
    tokens whose state could not be written). One token's state that cannot be written (a value the
    database refuses) is left out and named, and the others are written all the same."""
    contract = next((state.contract for state in states if state.contract), None)
    ours = (
        await repository.tokens_of_contract([state.token_id for state in states], contract)
        if contract
        else set()
    )
    points = await repository.sale_points([state.token_id for state in states if state.token_id in ours])
    operations: list[tuple[int, Any]] = []
    point_writes: list[tuple[int, Any]] = []
    refused: set[int] = set()
    for state in states:
        if state.contract is None or state.token_id not in ours:
            continue
        try:
            asset_ops, point_ops = _writes(state, points.get(state.token_id, {}))
        except (ValueError, ArithmeticError, TypeError) as exc:  # Decimal128's Inexact among them
            log.error("chain_state.refused", tokenId=state.token_id, error=f"{type(exc).__name__}: {exc}")
            refused.add(state.token_id)
            continue
        operations += [(state.token_id, op) for op in asset_ops]
        point_writes += [(state.token_id, op) for op in point_ops]
    changed, failed = await repository.write_chain_states(operations, point_writes)
    for token_id, error in failed:
        log.error("chain_state.refused", tokenId=token_id, error=error)
    return changed, refused | {token_id for token_id, _ in failed}


def _writes(state: ChainState, written: dict[Any, tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """The writes of one token's state: (its asset's, its sale points')."""
    query: dict[str, Any] = {"tokenId": state.token_id, "contractAddress": state.contract}
    asset_ops: list[Any] = []
    if state.mint_tx is None:
        # A mint a reorg took away: the asset waits for it again.
        asset_ops.append(
            UpdateOne(
                {**query, "chain.status": {"$in": ["minted", "confirmed"]}},
                {"$set": {"chain.status": "pending", "chain.mintTx": None, "chain.block": None}},
            )
        )
    asset_ops.append(UpdateOne(query, {"$set": _set(state)}))
    # Only what changed is written: a token with many sales costs its new sales, not all of them.
    keep = {sale_point_id(sale.point_key): sale for sale in state.sales}
    point_ops: list[Any] = []
    stale = [point for point in written if point not in keep]
    if stale:
        point_ops.append(DeleteMany({"_id": {"$in": stale}}))
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
        point_ops.append(UpdateOne({"_id": point_id}, {"$set": point}, upsert=True))
    return asset_ops, point_ops


async def confirm(final_block: int) -> int:
    """Mints whose block is now final are `confirmed`."""
    return await repository.confirm_mints(final_block)
