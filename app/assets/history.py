"""Price history of an asset: raw points in keyset pages, OHLC buckets by aggregation, CSV for analysts."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

from app.assets import history_schemas, price_records
from app.config import Settings
from app.lib.errors import BadRequest, require_one_of
from app.lib.money import wei_string
from app.lib.pagination import decode_cursor, encode_cursor
from app.lib.params import bounded_query, parse_limit
from app.lib.timeutil import client_time, utcnow

INTERVAL_UNITS = {
    "1h": ("hour", timedelta(hours=1)),
    "1d": ("day", timedelta(days=1)),
    "1w": ("week", timedelta(weeks=1)),
}
MAX_BUCKETS = 2_000
MAX_POINTS = 1_000
DEFAULT_POINTS = 500
DEFAULT_SPAN = {"1h": timedelta(days=7), "1d": timedelta(days=180), "1w": timedelta(days=730)}
CSV_POINT_COLUMNS = [
    "timestamp",
    "price",
    "priceWei",
    "priceUsd",
    "source",
    "dataSourceName",
    "modelVersion",
    "confidenceScore",
    "transactionHash",
]
CSV_BUCKET_COLUMNS = ["bucket", "open", "high", "low", "close", "mean", "count", "meanConfidence"]


def check_range(interval: str, start: datetime | None, end: datetime | None) -> None:
    """A known interval, and `from` before `to` when both are given; 400 otherwise."""
    require_one_of(interval, history_schemas.INTERVALS, field="interval", code="invalid_interval")
    if start is not None and end is not None and client_time(start, "from") >= client_time(end, "to"):
        raise BadRequest("from must be before to", code="invalid_range")


def _query(token_id: int, start: datetime | None, end: datetime | None, source: str | None) -> dict[str, Any]:
    return price_records.history_query(
        token_id,
        client_time(start, "from") if start is not None else None,
        client_time(end, "to") if end is not None else None,
        require_one_of(source, history_schemas.PRICE_SOURCES, field="source", code="invalid_source")
        if source is not None
        else None,
    )


def _point(doc: dict[str, Any]) -> history_schemas.PricePoint:
    source = doc.get("source") or {}
    return history_schemas.PricePoint(
        timestamp=doc["timestamp"],
        price=doc["price"],
        priceWei=wei_string(doc.get("priceWei")),
        priceUsd=doc.get("priceUsd"),
        source=source.get("type"),
        dataSourceName=source.get("dataSourceName"),
        modelVersion=source.get("modelVersion"),
        confidenceScore=(doc.get("aiMetrics") or {}).get("confidenceScore"),
        transactionHash=(doc.get("blockchain") or {}).get("transactionHash"),
    )


async def page(
    settings: Settings, token_id: int, query: history_schemas.HistoryQuery
) -> history_schemas.PriceHistoryPage:
    """Raw points (oldest first, paged) or OHLC buckets; `check_range` has passed."""
    interval = query.interval
    if interval == "raw":
        return await _raw_page(settings, token_id, query)
    if query.cursor is not None:
        raise BadRequest("cursor applies to raw points only", code="invalid_cursor")
    unit, step = INTERVAL_UNITS[interval]
    end = client_time(query.end, "to") if query.end is not None else utcnow()
    start = client_time(query.start, "from") if query.start is not None else end - DEFAULT_SPAN[interval]
    if (end - start) / step > MAX_BUCKETS:
        raise BadRequest(
            f"at most {MAX_BUCKETS} buckets: shorten the range or widen the interval", code="range_too_large"
        )
    filter_ = _query(token_id, start, end, query.source)
    async with bounded_query():
        rows = await price_records.history_buckets(filter_, unit, settings.mongodb.max_time_ms)
    buckets = [
        history_schemas.PriceBucket(
            bucket=row["_id"],
            open=row["open"],
            high=row["high"],
            low=row["low"],
            close=row["close"],
            mean=row["mean"],
            count=row["count"],
            meanConfidence=row.get("meanConfidence"),
        )
        for row in rows
    ]
    return history_schemas.PriceHistoryPage(tokenId=token_id, interval=interval, buckets=buckets)


async def _raw_page(
    settings: Settings, token_id: int, query: history_schemas.HistoryQuery
) -> history_schemas.PriceHistoryPage:
    size = parse_limit(query.limit, MAX_POINTS, DEFAULT_POINTS)
    scope = f"price-history:{token_id}"
    secret = settings.auth.jwt_secret.get_secret_value()
    after = decode_cursor(secret, scope, query.cursor) if query.cursor is not None else None
    filter_ = _query(token_id, query.start, query.end, query.source)
    async with bounded_query():
        docs, last = await price_records.history_page(
            filter_, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )
    return history_schemas.PriceHistoryPage(
        tokenId=token_id,
        interval="raw",
        points=[_point(doc) for doc in docs],
        nextCursor=encode_cursor(secret, scope, last) if last else None,
    )


def as_csv(page: history_schemas.PriceHistoryPage) -> str:
    """The page as CSV for analysts: one row per point or bucket, ISO-8601 UTC times."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if page.points is not None:
        columns = CSV_POINT_COLUMNS
        rows = [[getattr(point, name) for name in columns] for point in page.points]
    else:
        columns = CSV_BUCKET_COLUMNS
        rows = [[getattr(bucket, name) for name in columns] for bucket in page.buckets or []]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row])
    return out.getvalue()
