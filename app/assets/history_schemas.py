"""Request and response bodies of an asset's price history: what a client asks for (window, source,
interval, page) and the raw points or OHLC buckets it gets back."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.lib.schemas import Schema

PRICE_SOURCES = ("ai-oracle", "user-listing", "sale", "appraisal", "offer")
INTERVALS = ("raw", "1h", "1d", "1w")


class HistoryQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Which price history a client asked for, as sent (`history.check_range` checks it first)."""

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    interval: str = "raw"
    limit: int | None = None
    cursor: str | None = None


class PricePoint(Schema):
    timestamp: datetime
    price: float
    priceWei: str | None
    priceUsd: float | None
    source: str
    dataSourceName: str | None
    modelVersion: str | None
    confidenceScore: float | None
    transactionHash: str | None


class PriceBucket(Schema):
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    mean: float
    count: int
    meanConfidence: float | None


class PriceHistoryPage(Schema):
    """Raw points (`interval=raw`, paged by `nextCursor`) or OHLC buckets; the other list is null."""

    tokenId: int
    interval: str
    points: list[PricePoint] | None = None
    buckets: list[PriceBucket] | None = None
    nextCursor: str | None = None
