"""Rows into comparable sales and index points, upserted a batch at a time as the rows arrive.

A refresh holds one batch of rows (`repository.BATCH`), never all of a source's rows: a parsed row costs
tens of times its bytes, so a body near the size cap, gathered whole, would take gigabytes. Rejections
are kept as counts by reason and the first few rows, and a fetch stops at `ORACLE_MAX_ROWS_PER_FETCH`
rows (`too_many_rows`); what it wrote by then stays, as upserts make the next fetch repeat it harmlessly.

A row repeated within a batch is written once, as its last occurrence (an unordered bulk write would
apply the two in either order); repeated in a later batch it is written again, so the last occurrence
still wins. Either way it counts as a duplicate, not as another row accepted.
"""

from __future__ import annotations

from bisect import insort
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from bson import Decimal128

from app.lib.errors import AppError
from app.lib.money import wei_to_eth
from app.oracle import repository, rows
from app.oracle.parsing import Item, Rejected

USD_RATE_SERIES = "ETH/USD"  # USD per ETH: what USD sales are converted with
MAX_SAMPLES = 10


class TooManyRows(AppError):
    """The source has more rows than one fetch reads (`ORACLE_MAX_ROWS_PER_FETCH`)."""

    status_code, code = 422, "too_many_rows"


@dataclass
class Tally:
    """What a fetch did to its rows so far: counts, and the first rejected rows as samples."""

    read: int = 0  # rows read, accepted or not
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason), lowest first

    def reject(self, number: int, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] += 1
        if len(self.samples) < MAX_SAMPLES or (number, reason) < self.samples[-1]:
            insort(self.samples, (number, reason))
            del self.samples[MAX_SAMPLES:]


def _exact(value: Decimal) -> Decimal128:
    with localcontext() as context:
        context.prec = 34  # Decimal128's digits: an index value past them is rounded, once, here
        return Decimal128(context.create_decimal(value))


class Sink:
    """Takes a source's rows as they are parsed and upserts them a batch at a time."""

    def __init__(self, doc: dict[str, Any], *, text: bool, max_rows: int, now: datetime) -> None:
        self.doc, self.text, self.max_rows, self.now = doc, text, max_rows, now
        self.config = doc.get("configuration") or {}
        self.tally = Tally()
        self.writing = False  # inside a batch's reads and writes (a deadline then is the write's)
        self._pending: list[rows.Row] = []
        self._seen: set[int] = set()  # hashes of the keys written: a later repeat is a duplicate

    async def take(self, items: Iterable[Item]) -> None:
        """Every item, rejected or queued; a full batch is written before the next item is read."""
        for item in items:
            self.tally.read += 1
            if self.tally.read > self.max_rows:
                await self.flush()
                raise TooManyRows(
                    f"the source has more than {self.max_rows} rows; the first ones were written"
                )
            if isinstance(item, Rejected):
                self.tally.reject(item.number, item.reason)
                continue
            self._pending.append(item)
            if len(self._pending) >= repository.BATCH:
                await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.writing = True
        try:
            if self.doc.get("kind", "sales") == "sales":
                await self._write_sales(batch)
            else:
                await self._write_points(batch)
        finally:
            self.writing = False

    def _count(self, key: Any) -> None:
        marker = hash(key)
        if marker in self._seen:
            self.tally.duplicates += 1
        else:
            self._seen.add(marker)
            self.tally.accepted += 1

    def _upserted(self, counts: tuple[int, int, int]) -> None:
        inserted, updated, unchanged = counts
        self.tally.inserted += inserted
        self.tally.updated += updated
        self.tally.unchanged += unchanged

    async def _write_sales(self, batch: list[rows.Row]) -> None:
        mapping, defaults = self.config.get("mapping") or {}, self.config.get("defaults") or {}
        latest: dict[str, tuple[int, rows.Sale]] = {}
        for row in batch:
            sale = rows.sale_of(row, mapping, defaults, text=self.text)
            if isinstance(sale, str):
                self.tally.reject(row.number, sale)
                continue
            self.tally.duplicates += sale.external_id in latest
            latest[sale.external_id] = (row.number, sale)
        if not latest:
            return
        times = [sale.sold_at for _, sale in latest.values()]
        rates = rows.Rates(await repository.rates(USD_RATE_SERIES, min(times), max(times)))
        operations = []
        for number, sale in latest.values():
            price = rows.priced(sale, rates)
            if isinstance(price, str):
                self.tally.reject(number, price)
                continue
            fields = {
                "sourceName": self.doc["name"],
                "assetType": sale.asset_type,
                "soldAt": sale.sold_at,
                "price": wei_to_eth(price.wei),
                "priceWei": Decimal128(str(price.wei)),
                "priceUsd": float(price.usd) if price.usd is not None else None,
                "currency": sale.currency,
                "originalPrice": format(sale.price, "f"),
                "usdPerEth": format(price.rate, "f") if price.rate is not None else None,
                "attributes": sale.attributes,
                "tokenId": sale.token_id,
            }
            operations.append(repository.sale_upsert(self.doc["_id"], sale.external_id, fields, self.now))
            self._count(sale.external_id)
        if operations:
            self._upserted(await repository.write_sales(operations))

    async def _write_points(self, batch: list[rows.Row]) -> None:
        series = self.config.get("series") or self.doc["name"]
        latest: dict[datetime, rows.Point] = {}
        for row in batch:
            point = rows.point_of(row, self.config.get("mapping") or {})
            if isinstance(point, str):
                self.tally.reject(row.number, point)
                continue
            self.tally.duplicates += point.timestamp in latest
            latest[point.timestamp] = point
        operations = []
        for point in latest.values():
            fields = {"series": series, "value": float(point.value), "valueExact": _exact(point.value)}
            operations.append(repository.point_upsert(self.doc["_id"], point.timestamp, fields, self.now))
            self._count(point.timestamp)
        if operations:
            self._upserted(await repository.write_points(operations))
