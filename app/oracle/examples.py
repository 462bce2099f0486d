"""From stored documents to the model's examples: comparable sales and platform assets in one feature space.

Pure: no I/O. A sale is an example at its sale time; an asset is an example at the appraisal's time, with
its type, its public metadata and custom attributes as attributes (named as a sale's columns are, so a
`condition` column and an asset's `metadata.condition` are one feature), its listing price, its earlier
sales, and the level of every index series at that time. Prices are in the unit its type is modelled in:
USD for a type whose sales are mostly in USD (a house is priced in dollars; its ETH price follows the
rate at the time), ETH otherwise.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from app.lib.timeutil import as_utc
from oracle.features import Example

USD_RATE_SERIES = "ETH/USD"
LISTING_ATTRIBUTE = "listingPrice"
METADATA_ATTRIBUTES = (
    "assetLocation",
    "dimensions",
    "creator",
    "condition",
    "creationDate",
    "acquisitionDate",
)


class IndexLevels:
    """Every index series as points in time: the level of a series at a time is its latest point at or
    before it (none before its first point)."""

    def __init__(self, points: Iterable[tuple[str, datetime, float]]) -> None:
        series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
        for name, at, value in points:
            series[name].append((as_utc(at), value))
        self._times: dict[str, list[datetime]] = {}
        self._values: dict[str, list[float]] = {}
        for name, found in series.items():
            found.sort()
            self._times[name] = [at for at, _ in found]
            self._values[name] = [value for _, value in found]

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(sorted(self._times))

    def level(self, name: str, at: datetime) -> float | None:
        times = self._times.get(name)
        if not times:
            return None
        index = bisect_right(times, at) - 1
        return self._values[name][index] if index >= 0 else None

    def at(self, at: datetime) -> dict[str, float]:
        levels = {name: self.level(name, at) for name in self._times}
        return {name: value for name, value in levels.items() if value is not None}


def type_currencies(sales: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The unit each asset type is modelled in: USD when most of its sales were priced in USD."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for sale in sales:
        counts[sale["assetType"]][sale.get("currency") or "ETH"] += 1
    return {kind: "USD" if found["USD"] > found["ETH"] else "ETH" for kind, found in counts.items()}


def sale_price(sale: Mapping[str, Any], currency: str) -> float | None:
    """A sale's price in the unit of its type (None when a USD type's sale has no USD value)."""
    return sale.get("priceUsd") if currency == "USD" else sale.get("price")


def in_unit(eth: float, currency: str, usd_per_eth: float | None) -> float | None:
    """An ETH amount in a type's unit at a rate (None when USD is needed and there is no rate)."""
    if currency == "ETH":
        return eth
    return eth * usd_per_eth if usd_per_eth else None


def _asking(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 else None


def sale_example(
    sale: Mapping[str, Any],
    levels: IndexLevels,
    previous: tuple[tuple[datetime, float], ...] = (),
    currency: str | None = None,
) -> Example:
    """A sale as an example. Its `listingPrice` attribute, when a source gives one, is the asking price
    before the sale (in the sale's currency): the listing price feature, when that is the type's unit."""
    at = as_utc(sale["soldAt"])
    attributes = dict(sale.get("attributes") or {})
    asking = _asking(attributes.pop(LISTING_ATTRIBUTE, None))
    same_unit = currency is None or (sale.get("currency") or "ETH") == currency
    return Example(
        asset_type=sale["assetType"],
        at=at,
        attributes=attributes,
        listing_price=asking if same_unit else None,
        previous_sales=previous,
        index_levels=levels.at(at),
    )


def repeat_sales(
    sales: Iterable[Mapping[str, Any]], currencies: Mapping[str, str]
) -> dict[int, list[tuple[datetime, float]]]:
    """The sales of platform assets (those a source tied to a tokenId), per token, in each type's unit."""
    by_token: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    for sale in sales:
        token = sale.get("tokenId")
        price = sale_price(sale, currencies.get(sale["assetType"], "ETH"))
        if token is not None and price is not None:
            by_token[token].append((as_utc(sale["soldAt"]), price))
    return by_token


def asset_attributes(asset: Mapping[str, Any]) -> dict[str, Any]:
    """An asset's attributes: its public metadata fields, then its custom attributes (which win)."""
    metadata = asset.get("metadata") or {}
    attributes: dict[str, Any] = {}
    for name in METADATA_ATTRIBUTES:
        value = metadata.get(name)
        if value is not None:
            attributes[name] = as_utc(value) if isinstance(value, datetime) else value
    materials = metadata.get("materials")
    if materials:
        attributes["materials"] = "|".join(sorted(str(m) for m in materials))
    custom = metadata.get("customAttributes") or {}
    attributes.update({name: value for name, value in custom.items() if not isinstance(value, dict | list)})
    return attributes


def asset_example(
    asset: Mapping[str, Any],
    at: datetime,
    levels: IndexLevels,
    *,
    listing_price: float | None,
    previous: Iterable[tuple[datetime, float]] = (),
) -> Example:
    """An asset as of `at`: only the sales before `at` are its earlier sales."""
    return Example(
        asset_type=asset["assetType"],
        at=at,
        attributes=asset_attributes(asset),
        listing_price=listing_price,
        previous_sales=tuple(sorted(sale for sale in previous if sale[0] < at)),
        index_levels=levels.at(at),
    )


def data_hash(sales: Iterable[Mapping[str, Any]], points: Iterable[tuple[str, datetime, float]]) -> str:
    """sha256 of the training data (sales by source and id, then index points), independent of the order
    they were read in: the same data gives the same hash."""
    digest = hashlib.sha256()
    rows = sorted(
        (
            str(sale.get("sourceId")),
            str(sale["externalId"]),
            str(sale.get("priceWei")),
            as_utc(sale["soldAt"]).isoformat(),
            sale["assetType"],
            repr(sorted((sale.get("attributes") or {}).items())),
            str(sale.get("tokenId")),
        )
        for sale in sales
    )
    for row in rows:
        digest.update("\x1f".join(row).encode() + b"\x1e")
    for name, at, value in sorted((name, as_utc(at), value) for name, at, value in points):
        digest.update(f"{name}\x1f{at.isoformat()}\x1f{value!r}\x1e".encode())
    return digest.hexdigest()
