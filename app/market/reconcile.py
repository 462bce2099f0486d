"""Reconciliation: a sample of the platform's tokens read on the chain and compared with MongoDB.

The indexer rebuilds each token from its events, so MongoDB should say what the chain says; this checks
it rather than trusts it. The chain is read at the block the indexer has reached (what it has not read
yet is no drift), and each difference, by field (`owner`, `listing`), goes into the last drift report
(`GET /api/chain/status`) and the `dynamicvault_chain_drift_tokens` gauge.
"""

from __future__ import annotations

from typing import Any

import structlog

from app.assets import service as assets_service
from app.chain import service as chain_service
from app.config import Settings
from app.lib.timeutil import utcnow

log = structlog.get_logger("market.reconcile")
SAMPLE = 50


async def reconcile(clients, settings: Settings, sample: int = SAMPLE) -> dict[str, Any]:
    block = await chain_service.indexed_block(settings)
    token = await chain_service.contract(clients, settings, "AssetToken")
    market = await chain_service.contract(clients, settings, "Marketplace")
    if block is None or token is None or market is None:
        return {"reconciled": False}
    items = []
    assets = await assets_service.minted_sample(token.address, sample)
    for asset in assets:
        token_id = asset["tokenId"]
        owner = await token.functions.ownerOf(token_id).call(block_identifier=block)
        seller, price, listed_at = await market.functions.listings(token_id).call(block_identifier=block)
        moved = await token.functions.transfers(token_id).call(block_identifier=block)
        listed = seller == owner and listed_at == moved and price > 0
        # And buyable: the indexer shows no listing the marketplace may no longer move.
        listed = listed and await _approved(token, market.address, token_id, owner, block)
        chain_listing = str(price) if listed else None
        stored_owner = (asset.get("ownership") or {}).get("currentOwner")
        status = asset.get("marketStatus") or {}
        stored_listing = str(int(status["listingPriceWei"].to_decimal())) if status.get("isListed") else None
        if stored_owner != owner:
            items.append({"tokenId": token_id, "field": "owner", "chain": owner, "database": stored_owner})
        if stored_listing != chain_listing:
            items.append(
                {"tokenId": token_id, "field": "listing", "chain": chain_listing, "database": stored_listing}
            )
    by_field = {field: sum(1 for item in items if item["field"] == field) for field in ("owner", "listing")}
    report = {
        "at": utcnow(),
        "block": block,
        "sampled": len(assets),
        "byField": by_field,
        "items": items[:100],
    }
    await chain_service.save_drift(settings, report, "market")
    if items:
        log.warning("market.reconcile.drift", block=block, **by_field)
    return {"reconciled": True, "block": block, "sampled": len(assets), "drift": by_field}


async def _approved(token, operator: str, token_id: int, owner: str, block: int) -> bool:
    """Whether `operator` may move the token at `block`: approved for it, or for all of its owner's."""
    if await token.functions.getApproved(token_id).call(block_identifier=block) == operator:
        return True
    return await token.functions.isApprovedForAll(owner, operator).call(block_identifier=block)
