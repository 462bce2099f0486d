"""Response bodies of the transaction and market API (camelCase, as the seed plan names the fields)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.assets import service as assets_service  # the catalog's figures per type
from app.lib.schemas import Schema

TRANSACTION_TYPES = ("mint", "list", "buy", "sell", "delist", "transfer")
TRANSACTION_STATUSES = ("pending", "completed", "failed")
SALE_TYPES = ("buy", "sell")  # one on-chain sale is recorded once, as the side that initiated it


class TransactionQuery(msgspec.Struct, kw_only=True, frozen=True):
    """What a client asked of the transactions, as sent: filters (`wallet`: checksummed, as buyer or
    seller) and a page; the service checks each first."""

    type: str | None = None
    token_id: int | None = None
    wallet: str | None = None
    status: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int | None = None
    cursor: str | None = None


class TransactionItem(Schema):
    id: str
    type: str
    tokenId: int
    price: float | None
    priceWei: str | None
    priceUsd: float | None
    seller: str | None
    buyer: str | None
    timestamp: datetime
    status: str
    platformFee: float | None
    platformFeeWei: str | None
    paymentMethod: str | None
    transactionHash: str
    blockNumber: int | None
    gasUsed: int | None
    gasPriceWei: str | None


class TransactionPage(Schema):
    items: list[TransactionItem]
    nextCursor: str | None
    limit: int


class TypePrices(assets_service.TypeFigures):
    """One asset type: how many, how many listed, the floor (lowest asking) and mean and median prices."""


class VolumeWindow(Schema):
    """Completed sales in a window up to now, beside the window before it."""

    volume: float
    volumeWei: str
    salesCount: int
    previousVolume: float
    previousVolumeWei: str
    previousSalesCount: int
    volumeChangePct: float | None  # None when the window before had none
    salesChangePct: float | None


class VolumeWindows(Schema):
    day: VolumeWindow = msgspec.field(name="24h")
    week: VolumeWindow = msgspec.field(name="7d")
    month: VolumeWindow = msgspec.field(name="30d")


class MarketStats(Schema):
    """Asset counts, listings, prices by type, distinct owners, and sales volume over 24h, 7d and 30d."""

    generatedAt: datetime
    totalAssets: int
    listedCount: int
    uniqueOwners: int
    assetsByType: dict[str, int]
    priceByType: list[TypePrices]
    volume: VolumeWindows
