"""Prices other components set on assets: the AI oracle's appraisals.

An appraisal is as of a time. It becomes the asset's `appraisal` and `currentPrice` (source `ai-oracle`)
only when nothing newer is there already, so a historical appraisal (`asOf` in the past) adds its
price point without taking the place of today's price. Every point is keyed by its prediction's id:
a batch written twice (a job retried after a crash) adds each point once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import UpdateOne

from app.assets import repository


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


def _newer(path: str, at: datetime) -> dict[str, Any]:
    """Nothing at `path` is later than `at` (none, null, or earlier). Not an `$or`: a filter with one
    is served by a collection scan on some servers, once per update of the bulk write."""
    return {path: {"$not": {"$gt": at}}}


def _updates(item: AppraisedPrice, now: datetime) -> list[UpdateOne]:
    appraisal = {
        "predictionId": item.prediction_id,
        "price": item.price,
        "priceWei": Decimal128(str(item.price_wei)),
        "low": item.low,
        "high": item.high,
        "confidenceScore": item.confidence,
        "modelVersion": item.model_version,
        "timestamp": item.at,
    }
    price = {
        "value": item.price,
        "valueWei": Decimal128(str(item.price_wei)),
        "valueUsd": item.price_usd,
        "updatedAt": item.at,
        "aiConfidenceScore": item.confidence,
    }
    return [
        UpdateOne(
            {"tokenId": item.token_id, **_newer("appraisal.timestamp", item.at)},
            {"$set": {"appraisal": appraisal, "updatedAt": now}},
        ),
        UpdateOne(
            {"tokenId": item.token_id, **_newer("currentPrice.updatedAt", item.at)},
            {"$set": {"currentPrice": price, "updatedAt": now}},
        ),
    ]


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


async def apply(items: Sequence[AppraisedPrice], now: datetime) -> dict[str, int]:
    """Write a batch of appraisals: the assets' appraisal and price where newer, and a point each."""
    updates = [update for item in items for update in _updates(item, now)]
    changed, added = await repository.write_appraisals(updates, [_point(item) for item in items])
    return {"assetsChanged": changed, "pointsAdded": added}
