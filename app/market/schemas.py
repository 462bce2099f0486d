"""Response models of the transaction and market API."""

from __future__ import annotations

from datetime import datetime

import msgspec

TRANSACTION_TYPES = ("mint", "list", "buy", "sell", "delist", "transfer")
TRANSACTION_STATUSES = ("pending", "completed", "failed")
SALE_TYPES = ("buy", "sell")  # one on-chain sale is recorded once, as the side that initiated it


class TransactionItem(msgspec.Struct):
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


class TransactionPage(msgspec.Struct):
    items: list[TransactionItem]
    nextCursor: str | None
    limit: int
