"""Prices other components set on assets: the AI oracle's appraisals.

An appraisal is as of a time. It becomes the asset's `appraisal` and `currentPrice` (source `ai-oracle`)
only when nothing newer is there already, so a historical appraisal (`asOf` in the past) adds its
price point without taking the place of today's price. The asset's own `updatedAt` is left alone: a
price is not a change to the asset, and each indexed field an update touches costs every write. Every
point is keyed by its prediction's id: a batch written twice (a job retried after a crash) adds each
point once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import UpdateOne

from app.assets import price_records
from app.lib.timeutil import as_utc


@dataclass(frozen=True, slots=True)
class AppraisedPrice:
    """One appraisal of one asset, prices in ETH (wei exact)."""

    token_id: int
    asset_id: ObjectId | None
    prediction_id: ObjectId
    at: datetime
    price: float
    price_wei: int
    low: float
    high: float
    confidence: float
    model_version: str
    price_usd: float | None = None
    factors: Sequence[tuple[str, float, float]] = field(default_factory=tuple)  # name, weight, impact
    # What the asset held when the appraisal read it: the time of its price and of its appraisal.
    price_set_at: datetime | None = None
    appraised_at: datetime | None = None


def _newer(path: str, at: datetime) -> dict[str, Any]:
    """Nothing at `path` is later than `at` (none, null, or earlier). Not an `$or`: a filter with one
    is served by a collection scan on some servers, once per update of the bulk write."""
    return {path: {"$not": {"$gt": at}}}


def _not_after(when: datetime | None, at: datetime) -> bool:
    return when is None or as_utc(when) <= at


def _update(item: AppraisedPrice) -> UpdateOne | None:
    """One update of the asset: its appraisal, and its price, each where nothing newer was there when it
    was read; the filter holds that still, so a newer write in between wins."""
    changes: dict[str, Any] = {}
    query: dict[str, Any] = {"tokenId": item.token_id}
    if _not_after(item.appraised_at, item.at):
        query.update(_newer("appraisal.timestamp", item.at))
        changes["appraisal"] = {
            "predictionId": item.prediction_id,
            "price": item.price,
            "priceWei": Decimal128(str(item.price_wei)),
            "low": item.low,
            "high": item.high,
            "confidenceScore": item.confidence,
            "modelVersion": item.model_version,
            "timestamp": item.at,
        }
    if _not_after(item.price_set_at, item.at):
        query.update(_newer("currentPrice.updatedAt", item.at))
        changes["currentPrice"] = {
            "value": item.price,
            "valueWei": Decimal128(str(item.price_wei)),
            "valueUsd": item.price_usd,
            "updatedAt": item.at,
            "aiConfidenceScore": item.confidence,
        }
    return UpdateOne(query, {"$set": changes}) if changes else None


def _point(item: AppraisedPrice) -> dict[str, Any]:
    return {
        "_id": item.prediction_id,
        "assetId": item.asset_id,
        "tokenId": item.token_id,
        "price": item.price,
        "priceWei": Decimal128(str(item.price_wei)),
        "priceUsd": item.price_usd,
        "timestamp": item.at,
        "source": {"type": "ai-oracle", "modelVersion": item.model_version, "dataSourceName": None},
        "aiMetrics": {
            "confidenceScore": item.confidence,
            "factors": [
                {"name": name, "weight": weight, "impact": impact} for name, weight, impact in item.factors
            ],
        },
        "blockchain": None,
    }


async def apply(items: Sequence[AppraisedPrice]) -> dict[str, int]:
    """Write a batch of appraisals: the assets' appraisal and price where newer, and a point each."""
    updates = [update for update in map(_update, items) if update is not None]
    changed, added = await price_records.write_appraisals(updates, [_point(item) for item in items])
    return {"assetsChanged": changed, "pointsAdded": added}
