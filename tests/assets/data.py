"""Factories for assets, price points and transactions, written as the API and the indexer write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.assets.documents import (
    AiMetrics,
    Asset,
    AssetStats,
    CurrentPrice,
    MarketStatus,
    Ownership,
    PriceHistory,
    PriceSource,
    Verification,
)
from app.lib.money import WEI_PER_ETH, wei_to_eth
from app.market.documents import Transaction, TransactionChain
from scripts.seed import wallet

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ALICE, BOB, CAROL = wallet(1), wallet(2), wallet(3)


def wei(eth: str | float) -> Decimal:
    return (Decimal(str(eth)) * WEI_PER_ETH).quantize(Decimal(1))


async def asset(
    token_id: int,
    *,
    asset_type: str = "Art",
    owner: str = ALICE,
    price: str | float | None = None,
    listed_at: str | float | None = None,
    verified: bool = False,
    views: int = 0,
    created: datetime | None = None,
    name: str | None = None,
    **overrides: Any,
) -> Asset:
    """Insert an asset; `price` and `listed_at` are ETH amounts (exact in wei)."""
    created = created or T0 + timedelta(hours=token_id)
    current = CurrentPrice()
    if price is not None:
        current = CurrentPrice(
            value=wei_to_eth(wei(price)), valueWei=wei(price), valueUsd=float(price) * 3000, updatedAt=created
        )
    market = MarketStatus()
    if listed_at is not None:
        market = MarketStatus(
            isListed=True,
            listingPrice=wei_to_eth(wei(listed_at)),
            listingPriceWei=wei(listed_at),
            listedAt=created,
            listedBy=owner,
        )
    document = Asset(
        tokenId=token_id,
        contractAddress=CONTRACT,
        name=name or f"Asset {token_id}",
        assetType=asset_type,
        currentPrice=current,
        marketStatus=market,
        ownership=Ownership(currentOwner=owner, ownerSince=created),
        verification=Verification(isVerified=verified),
        stats=AssetStats(viewCount=views),
        createdAt=created,
        updatedAt=created,
        **overrides,
    )
    await document.insert()
    return document


async def price_point(
    token_id: int,
    at: datetime,
    price: str | float,
    source: str = "ai-oracle",
    confidence: float | None = 80.0,
) -> PriceHistory:
    point = PriceHistory(
        tokenId=token_id,
        price=wei_to_eth(wei(price)),
        priceWei=wei(price),
        timestamp=at,
        source=PriceSource(type=source, dataSourceName="tests"),
        aiMetrics=AiMetrics(confidenceScore=confidence) if confidence is not None else None,
    )
    await point.insert()
    return point


def transaction(
    n: int,
    *,
    kind: str = "buy",
    token_id: int = 1,
    price: str | float | None = "1.5",
    seller: str | None = ALICE,
    buyer: str | None = BOB,
    at: datetime | None = None,
    status: str = "completed",
) -> Transaction:
    return Transaction(
        type=kind,
        tokenId=token_id,
        price=float(price) if price is not None else None,
        priceWei=wei(price) if price is not None else None,
        seller=seller,
        buyer=buyer,
        timestamp=at or T0 + timedelta(minutes=n),
        blockchain=TransactionChain(transactionHash="0x" + f"{n:064x}", blockNumber=100 + n),
        status=status,
    )
