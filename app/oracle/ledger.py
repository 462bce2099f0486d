"""The live ledger: every appraisal scored against the asset's next real sale, and the figures it adds up to.

A sale is the next sale of an appraisal when it is the first after the appraisal's time (and not after
the scoring: a sale dated in the future has not happened), on-chain (a completed buy or sell) or from a
source that names the token (which takes the `oracle:manage` permission to set up). Scoring sets the
prediction's `outcome` (the sale, its APE, whether the interval held it) and the seed's
`performanceMetrics`, once: the update only matches a prediction still unscored. The
`oracle.score_ledger` cron scores the tokens sold, and the tokens appraised, since its last run (with
an overlap, as sales can be recorded late), and the appraisal and refresh paths need not know of it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
from bson import Decimal128
from pymongo import UpdateOne

from app.lib import cache
from app.lib.money import eth_to_wei, wei_to_eth
from app.lib.timeutil import as_utc
from app.market import service as market_service
from app.oracle import model_repository
from oracle.rounds import band_from_confidence

WATERMARK_KEY = "oracle:ledger:watermark"
FIGURES_CACHE = "oracle_ledger"
FIGURES_TTL_S = 60  # the figures read up to MAX_SCORED documents: one computation a minute per version
OVERLAP = timedelta(days=1)
MAX_SCORED = 200_000  # the figures are over a version's latest this many scored predictions


async def _sales(tokens: list[int], since: datetime) -> dict[int, list[tuple[datetime, int, str]]]:
    """The sales of these tokens after `since`, per token, in time order: (time, wei, source)."""
    sales: dict[int, list[tuple[datetime, int, str]]] = defaultdict(list)
    for token, found in (await market_service.sales_of(tokens, since=since)).items():
        sales[token].extend(found)
    for sale in await model_repository.token_sales(tokens, since=since):
        wei = int(sale["priceWei"].to_decimal())
        sales[sale["tokenId"]].append((as_utc(sale["soldAt"]), wei, f"source:{sale.get('sourceName')}"))
    for found in sales.values():
        found.sort()
    return sales


def _outcome(prediction: dict[str, Any], sale: tuple[datetime, int, str], now: datetime) -> dict[str, Any]:
    sold_at, wei, source = sale
    price = wei_to_eth(wei)
    ape = abs(prediction["predictedPrice"] - price) / price
    interval = prediction.get("interval")
    if interval:
        low, high = interval["low"], interval["high"]
    else:  # an operator's submission without a band: the band its confidence stands for, as rounds take it
        band = band_from_confidence(
            eth_to_wei(prediction["predictedPrice"]), prediction.get("confidenceScore", 0)
        )
        low, high = wei_to_eth(band[0]), wei_to_eth(band[1])
    covered = low <= price <= high
    return {
        "outcome": {
            "soldAt": sold_at,
            "price": price,
            "priceWei": Decimal128(str(wei)),
            "source": source,
            "ape": ape,
            "covered": covered,
            "scoredAt": now,
        },
        "performanceMetrics": {
            "accuracy": max(0.0, 1 - ape),
            "errorMargin": ape,
            "calibration": float(covered),
        },
    }


async def score_tokens(redis, tokens: list[int], now: datetime) -> int:
    """Score the unscored predictions of these tokens that a later sale exists for; how many."""
    if not tokens:
        return 0
    pending = await model_repository.pending_predictions(tokens)
    if not pending:
        return 0
    earliest = min(as_utc(p["timestamp"]) for p in pending)
    sales = await _sales(sorted({p["tokenId"] for p in pending}), earliest)
    operations = []
    for prediction in pending:
        at = as_utc(prediction["timestamp"])
        found = sales.get(prediction["tokenId"], ())
        following = next((sale for sale in found if at < sale[0] <= now), None)
        if following is not None:
            operations.append(
                UpdateOne(
                    {"_id": prediction["_id"], "outcome": None},
                    {"$set": _outcome(prediction, following, now)},
                )
            )
    scored = await model_repository.score_predictions(operations)
    # the platform's versions: an operator naming one does not make its figures computed again
    versions = {p.get("modelVersion") for p in pending if p.get("modelVersion") and p.get("operator") is None}
    await cache.drop(redis, *(_figures_key(version) for version in sorted(versions)))
    return scored


async def score_recent(redis, now: datetime) -> dict[str, int]:
    """Score the tokens sold since the last run (all of them the first time); then move the watermark."""
    stored = await redis.get(WATERMARK_KEY)
    since = (
        datetime.fromisoformat(stored.decode() if isinstance(stored, bytes) else stored) - OVERLAP
        if stored
        else None
    )
    tokens = sorted(
        set(await market_service.tokens_sold_since(since))
        | set(await model_repository.tokens_sold_since(since))
        | set(await model_repository.tokens_predicted_since(since))
    )

    scored = await score_tokens(redis, tokens, now)
    await redis.set(WATERMARK_KEY, now.isoformat())
    return {"tokens": len(tokens), "scored": scored}


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    apes = np.array([row["outcome"]["ape"] for row in rows], dtype=float)
    covered = np.array([row["outcome"]["covered"] for row in rows], dtype=float)
    if not len(apes):
        return {"count": 0, "mdape": None, "p95Ape": None, "mape": None, "coverage90": None}
    return {
        "count": len(apes),
        "mdape": float(np.median(apes)),
        "p95Ape": float(np.quantile(apes, 0.95)),
        "mape": float(apes.mean()),
        "coverage90": float(covered.mean()),
    }


def _figures_key(version: str) -> str:
    return f"{FIGURES_CACHE}:{version}"


async def figures(redis, version: str) -> dict[str, Any]:
    """The live ledger of a version: count, MdAPE, p95 APE, MAPE and 90% coverage, overall and per type
    (cached for a minute, and dropped when a sale scores one of its predictions)."""

    async def compute() -> bytes:
        return msgspec.json.encode(await _compute(version))

    found = await cache.computed_once(redis, FIGURES_CACHE, _figures_key(version), FIGURES_TTL_S, compute)
    return msgspec.json.decode(found)


async def _compute(version: str) -> dict[str, Any]:
    rows = await model_repository.scored(version, MAX_SCORED)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_type[row.get("assetType") or "unknown"].append(row)
    return {**_figures(rows), "byType": {kind: _figures(found) for kind, found in sorted(by_type.items())}}
