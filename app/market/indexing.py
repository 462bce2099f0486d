"""What the chain's events mean to the marketplace: transactions, owners, listings and sales.

The chain domain's indexer reads the contracts' logs into `chainEvents` and says which tokens a pass
touched, including those whose events a reorg removed. For each such token this rebuilds, from its
live events alone, everything the chain decides:

- its `transactions`: one per on-chain transaction, as the seed names them (`mint` for a transfer from
  the zero address, `transfer`, `list`, `delist`, and a marketplace sale as `buy`; the transfer inside
  a sale is the sale), `pending` until the block is final, then `completed`. A transaction whose
  events are all removed is deleted;
- its owner (the last transfer's receiver, since that block's time) and listing (the last `Listed`,
  unless a `Delisted`, a sale or a transfer came after it), and its mint (`chain`);
- its sale points in the price history, one per `Sold`, removed with it.

Rebuilding from the events makes a pass idempotent and a reorg a matter of reading again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from app.assets import service as assets_service
from app.chain import service as chain_service
from app.config import Settings
from app.lib import landing
from app.lib.money import wei_to_eth
from app.market import repository
from app.market.documents import Transaction, TransactionChain

log = structlog.get_logger("market.indexing")
SALE = "Sold"
T = TypeVar("T")
MARKET_EVENTS = ("Listed", "Delisted", "Sold")
TRANSACTION_EVENTS = ("Transfer", *MARKET_EVENTS)
MAX_WEI = 2**96 - 1  # the contracts' bound on an amount: 79 billion ETH, more than there is


async def index_chain(clients, settings: Settings) -> dict[str, Any]:
    """One pass of the indexer, applied to the marketplace: every token still pending is rebuilt (those
    of this pass, and any a crash left), then marked applied."""
    done = await chain_service.index_once(clients, settings)
    if done is None:
        return {"indexed": False}
    final = await chain_service.final_block(clients, settings, done.head)
    token_address = await chain_service.deployed_address(settings, "AssetToken")
    pending = await chain_service.pending_tokens(settings)
    applied = await apply_tokens(clients, settings, pending, final, token_address)
    refused = set(applied["refused"])
    await _landed(chain_service.tokens_applied(settings, [t for t in pending if t not in refused]))
    completed = await _landed(repository.complete_indexed(final))
    await _landed(assets_service.confirm_chain_states(final))
    result = {
        "from": done.start,
        "to": done.end,
        "head": done.head,
        "events": done.events,
        "tokens": len(pending),
        "completed": completed,
        **applied,
    }
    if done.reorg is not None:
        result["reorg"] = {k: done.reorg[k] for k in ("fork", "depth", "removed")}
    return result


async def _landed(write: Awaitable[T]) -> T:
    """A write of the pass: one that fails or is cancelled (and so lets go of its lease) ends only once
    the write it sent has, since landing under the next pass it could set a token back."""
    return await landing.landed(write, event="market.indexing.write_unsettled")


async def apply_tokens(
    clients, settings: Settings, token_ids: list[int], final: int, token_address: str | None
) -> dict[str, Any]:
    """Rebuild the transactions, owner, listing, mint and sale points of these tokens from their events."""
    if not token_ids:
        return {"transactions": 0, "deleted": 0, "refused": []}
    by_token: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in await chain_service.token_events(settings, token_ids, ["AssetToken", "Marketplace"]):
        by_token[event["tokenId"]].append(event)
    known = await repository.indexed_rows(token_ids)
    market_address = await chain_service.deployed_address(settings, "Marketplace")
    sellers = sorted(
        {e["args"]["seller"] for events in by_token.values() for e in events if e["event"] == "Listed"}
    )
    approved_all = (
        await chain_service.operator_approvals(settings, sellers, market_address) if market_address else {}
    )
    live: set[tuple[str, int]] = set()
    inserts: list[tuple[Transaction, dict[str, Any]]] = []
    updates: list[Any] = []
    states = []
    refused: set[int] = set()
    for token_id in token_ids:
        events = by_token.get(token_id, [])
        try:
            rows = _transactions(token_id, events, final)
            new, moved = repository.indexed_writes(rows, known)
            state = _state(token_id, events, final, token_address, market_address, approved_all)
        except (ValueError, ArithmeticError, TypeError, KeyError) as exc:
            # One token's events the platform cannot hold must not hold back every other token: it stays
            # pending, tried again each pass, and logged each time.
            log.error("market.indexing.token_refused", tokenId=token_id, error=f"{type(exc).__name__}: {exc}")
            refused.add(token_id)
            continue
        live.update((row.blockchain.transactionHash, token_id) for row in rows)
        inserts += new
        updates += moved
        states.append(state)
    written, refused_rows = await _landed(repository.insert_indexed(inserts))
    written += await _landed(repository.update_indexed(updates))
    stale = [row for row in known if row not in live and row[1] not in refused]
    deleted = await _landed(repository.delete_rows(stale))
    refused |= refused_rows | await _landed(assets_service.apply_chain_states(clients.redis, states))
    return {"transactions": written, "deleted": deleted, "refused": sorted(refused)}


def _transactions(token_id: int, events: list[dict[str, Any]], final: int) -> list[Transaction]:
    by_hash: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["event"] in TRANSACTION_EVENTS:  # an approval is no transaction of the seed's
            by_hash[event["txHash"]].append(event)
    found = []
    for tx_hash, group in by_hash.items():
        event = next((e for e in group if e["event"] == SALE), None) or group[-1]
        args = event["args"]
        kind, seller, buyer, price, fee = _meaning(event, args)
        found.append(
            Transaction(
                type=kind,
                tokenId=token_id,
                price=wei_to_eth(price) if price is not None else None,
                priceWei=price,
                seller=seller,
                buyer=buyer,
                timestamp=event["blockTime"],
                blockchain=TransactionChain(
                    transactionHash=tx_hash.lower(),
                    blockNumber=event["blockNumber"],
                    blockHash=event["blockHash"],
                    logIndex=event["logIndex"],
                ),
                status="completed" if event["blockNumber"] <= final else "pending",
                platformFee=wei_to_eth(fee) if fee is not None else None,
                platformFeeWei=fee,
            )
        )
    return found


def _meaning(
    event: dict[str, Any], args: dict[str, Any]
) -> tuple[str, str | None, str | None, int | None, int | None]:
    """(type, seller, buyer, price in wei, fee in wei) of one event."""
    name = event["event"]
    if name == "Sold":
        return "buy", args["seller"], args["buyer"], _amount(args["price"]), _amount(args["fee"])
    if name == "Listed":
        return "list", args["seller"], None, _amount(args["price"]), None
    if name == "Delisted":
        return "delist", args["seller"], None, None, None
    if args["sender"] == chain_service.ZERO_ADDRESS:
        return "mint", None, args["receiver"], None, None
    return "transfer", args["sender"], args["receiver"], None, None


def _state(
    token_id: int,
    events: list[dict[str, Any]],
    final: int,
    token_address: str | None,
    market_address: str | None,
    approved_all: dict[str, bool],
):
    transfers = [e for e in events if e["event"] == "Transfer"]
    owner = since = None
    if transfers:
        owner, since = transfers[-1]["args"]["receiver"], transfers[-1]["blockTime"]
    listing = None
    market = [e for e in events if e["event"] in MARKET_EVENTS]
    if market and market[-1]["event"] == "Listed":
        listed = market[-1]
        moved_after = any(_after(t, listed) for t in transfers)
        price = _amount(listed["args"]["price"])
        # A price over all the ether there is cannot be paid: no listing to show (a Marketplace of an
        # older build took any).
        sellable = price is not None and _may_sell(events, transfers, listed, market_address, approved_all)
        if not moved_after and sellable:
            listing = assets_service.ChainListing(
                price_wei=price,
                listed_at=listed["blockTime"],
                seller=listed["args"]["seller"],
            )
    mint = next((t for t in transfers if t["args"]["sender"] == chain_service.ZERO_ADDRESS), None)
    sales = [
        assets_service.ChainSale(
            point_key=f"{e['txHash']}:{e['logIndex']}",
            price_wei=price,
            at=e["blockTime"],
            tx_hash=e["txHash"],
            block=e["blockNumber"],
        )
        for e in events
        if e["event"] == SALE and (price := _amount(e["args"]["price"])) is not None
    ]
    return assets_service.ChainState(
        token_id=token_id,
        contract=token_address,
        owner=owner,
        owner_since=since,
        listing=listing,
        has_market_events=bool(market),
        mint_tx=mint["txHash"] if mint else None,
        mint_block=mint["blockNumber"] if mint else None,
        mint_final=bool(mint and mint["blockNumber"] <= final),
        sales=sales,
    )


def _amount(value: Any) -> int | None:
    """An amount in wei as the platform holds it: None beyond MAX_WEI, which a Decimal128 could not hold
    exactly (a token's row and state are written all the same, without it)."""
    amount = int(value)
    return amount if 0 <= amount <= MAX_WEI else None


def _after(event: dict[str, Any], other: dict[str, Any]) -> bool:
    return (event["blockNumber"], event["logIndex"]) > (other["blockNumber"], other["logIndex"])


def _may_sell(
    events: list[dict[str, Any]],
    transfers: list[dict[str, Any]],
    listed: dict[str, Any],
    market_address: str | None,
    approved_all: dict[str, bool],
) -> bool:
    """Whether the marketplace may still move a listed token: approved for it since its last transfer
    (a transfer clears the token's approval), or for all of its seller's tokens. A listing whose owner
    took the approval back cannot be bought, so it is not shown as listed (and is again once the
    approval returns). Listing needed one of the two, so with neither on record (events indexed before
    approvals were) the listing stands."""
    if market_address is None:
        return True
    last_transfer = transfers[-1] if transfers else None
    approvals = [
        e for e in events if e["event"] == "Approval" and (last_transfer is None or _after(e, last_transfer))
    ]
    if approvals and approvals[-1]["args"]["approved"].lower() == market_address.lower():
        return True
    for_all = approved_all.get(listed["args"]["seller"])  # None: no such approval on record
    if for_all:
        return True
    return not approvals and for_all is None
