"""Appraisals (the `oracle.appraise` job): a model version over every asset, or over some, as of a time.

Assets are read, predicted and written ORACLE_APPRAISAL_BATCH at a time: one query for the assets, one
for their earlier sales, one batch prediction per asset type, one bulk insert of `aiOracleData`, one bulk
update of the assets (app/assets/pricing.py). As of a past time (`asOf`), the version is the latest
trained only on sales before it, and time, ages, index levels and earlier sales are all taken at that
time. Each prediction's id is derived from the job and the token, so a job retried after a crash writes
each prediction, and each price point, once.

A type priced in USD (see app/oracle/examples.py) is predicted in USD and converted to ETH at the
ETH/USD level of the appraisal's time; without such a level its assets are skipped (`no_usd_rate`), as
are assets of a type the version has no model for (`no_model`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import Decimal128, ObjectId
from threadpoolctl import threadpool_limits

from app.assets import service as assets_service
from app.config import Settings
from app.lib.errors import Conflict
from app.lib.money import eth_to_wei, wei_to_eth
from app.lib.timeutil import as_utc
from app.market import service as market_service
from app.oracle import examples, model_repository, registry

EXPLAIN = 5
CONFIDENCE_LEVEL = 0.9


class NoModel(Conflict):
    code = "no_model"


@dataclass
class Run:
    """One appraisal run: its model, its time, and what it has done so far."""

    job_id: str
    at: datetime
    record: dict[str, Any]
    bundle: registry.Bundle
    levels: examples.IndexLevels
    usd_per_eth: float | None
    now: datetime
    historical: bool
    threads: int = 1
    appraised: int = 0
    skipped: Counter = field(default_factory=Counter)
    points_added: int = 0


def prediction_id(job_id: str, token_id: int, at: datetime) -> ObjectId:
    """The id of a run's prediction for a token: the same on every try of the job."""
    seconds = min(max(int(at.timestamp()), 0), 2**32 - 1)
    digest = hashlib.sha256(f"{job_id}:{token_id}".encode()).digest()
    return ObjectId(seconds.to_bytes(4, "big") + digest[:8])


async def model_for(as_of: datetime | None, version: str | None) -> dict[str, Any]:
    """The version to appraise with: the one named, or the current one; as of a past time, only a
    version trained on the sales before it (the latest such, unless one is named). 409 `no_model`
    when there is none ready."""
    if version:
        record = await model_repository.find_model(version)
        until = record.get("dataUntil") if record else None
        if record is not None and as_of is not None and (until is None or as_utc(until) > as_of):
            raise NoModel(f"model version {version} learnt from sales after asOf")
    else:
        record = await model_repository.current_model(as_of)
    if record is None or record.get("status") != "ready":
        raise NoModel(f"no ready model version{' ' + version if version else ''} to appraise with")
    return record


async def run(
    clients,
    settings: Settings,
    *,
    job_id: str,
    token_ids: list[int] | None,
    as_of: datetime | None,
    now: datetime,
    version: str | None = None,
) -> dict[str, Any]:
    """Appraise the assets; the counts (appraised, skipped by reason) and the version used."""
    at = as_utc(as_of) if as_of is not None else now
    record = await model_for(as_of, version)
    bundle = await registry.load(clients.storage, record)
    points = await model_repository.index_points(at + timedelta(milliseconds=1))
    levels = examples.IndexLevels(points)
    rate = levels.level(examples.USD_RATE_SERIES, at)
    state = Run(
        job_id, at, record, bundle, levels, rate, now, as_of is not None, settings.oracle.model_threads
    )
    after = None
    wanted = sorted(set(token_ids)) if token_ids is not None else None
    size = settings.oracle.appraisal_batch
    if wanted is not None:  # a chunk of the tokens asked for per query: no `$in` of them all each time
        for start in range(0, len(wanted), size):
            batch = await assets_service.appraisal_batch(wanted[start : start + size], None, size)
            if batch:
                await _appraise(clients, state, batch)
    while wanted is None:
        batch = await assets_service.appraisal_batch(None, after, size)
        if not batch:
            break
        after = batch[-1]["tokenId"]
        await _appraise(clients, state, batch)
    missing = len(wanted) - state.appraised - sum(state.skipped.values()) if wanted is not None else 0
    if missing:
        state.skipped["asset_not_found"] += missing
    return {
        "modelVersion": record["version"],
        "asOf": at.isoformat(),
        "appraised": state.appraised,
        "skipped": dict(state.skipped),
        "pointsAdded": state.points_added,
    }


async def _earlier_sales(state: Run, tokens: list[int]) -> dict[int, list[tuple[datetime, float, str]]]:
    """Each token's sales before the appraisal's time, in ETH: on-chain and from sources."""
    sales: dict[int, list[tuple[datetime, float, str]]] = defaultdict(list)
    for token, found in (await market_service.sales_of(tokens)).items():
        sales[token].extend((at, wei_to_eth(wei), "ETH") for at, wei, _ in found if at < state.at)
    for sale in await model_repository.token_sales(tokens):
        at = as_utc(sale["soldAt"])
        if at < state.at:
            sales[sale["tokenId"]].append((at, sale["price"], "ETH"))
    return sales


def _predict(model, found: list, threads: int):
    with threadpool_limits(limits=threads):
        return model.predict(found, explain=EXPLAIN)


def _in_unit(state: Run, eth: float, at: datetime, currency: str) -> float | None:
    return examples.in_unit(eth, currency, state.levels.level(examples.USD_RATE_SERIES, at))


async def _appraise(clients, state: Run, batch: list[dict[str, Any]]) -> None:
    earlier = await _earlier_sales(state, [asset["tokenId"] for asset in batch])
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for asset in batch:
        by_type[asset["assetType"]].append(asset)
    documents, prices = [], []
    for asset_type, assets in by_type.items():
        model = state.bundle.models.get(asset_type)
        currency = state.bundle.currencies.get(asset_type, "ETH")
        if model is None:
            state.skipped["no_model"] += len(assets)
            continue
        if currency == "USD" and not state.usd_per_eth:
            state.skipped["no_usd_rate"] += len(assets)
            continue
        found = [_example(state, asset, earlier.get(asset["tokenId"], []), currency) for asset in assets]
        predicted = await asyncio.to_thread(_predict, model, found, state.threads)
        for i, asset in enumerate(assets):
            document, price = _prediction(state, asset, found[i], model, predicted, i, currency)
            documents.append(document)
            prices.append(price)
    if not documents:
        return
    await model_repository.insert_predictions(documents)
    written = await assets_service.apply_appraisals(clients.redis, prices)
    state.appraised += len(documents)
    state.points_added += written["pointsAdded"]


def _example(state: Run, asset: dict[str, Any], earlier: list, currency: str):
    market = asset.get("marketStatus") or {}
    listed_at = market.get("listedAt")
    listed_then = listed_at is None or as_utc(listed_at) <= state.at  # as of a past time: listed by then
    listing = market.get("listingPrice") if market.get("isListed") and listed_then else None
    previous = []
    for at, eth, _ in earlier:
        value = _in_unit(state, eth, at, currency)
        if value is not None:
            previous.append((at, value))
    return examples.asset_example(
        asset,
        state.at,
        state.levels,
        listing_price=_in_unit(state, listing, state.at, currency) if listing else None,
        previous=previous,
    )


def _eth(state: Run, value: float, currency: str) -> float:
    return float(value) / state.usd_per_eth if currency == "USD" else float(value)


def _prediction(state: Run, asset, example, model, predicted, i: int, currency: str):
    """The `aiOracleData` document of one prediction, and the price it gives the asset."""
    token = asset["tokenId"]
    identifier = prediction_id(state.job_id, token, state.at)
    price, low, high = (
        _eth(state, getattr(predicted, name)[i], currency) for name in ("price", "low", "high")
    )
    price_wei, low_wei, high_wei = eth_to_wei(price), eth_to_wei(low), eth_to_wei(high)
    price, low, high = wei_to_eth(price_wei), wei_to_eth(low_wei), wei_to_eth(high_wei)
    confidence = round(float(predicted.confidence[i]), 2)
    attributions = predicted.explanations[i]
    usd = price * state.usd_per_eth if state.usd_per_eth else None
    document = {
        "_id": identifier,
        "assetId": asset.get("_id"),
        "tokenId": token,
        "assetType": asset["assetType"],
        "timestamp": state.at,
        "asOf": state.at if state.historical else None,
        "predictedPrice": price,
        "predictedPriceWei": Decimal128(str(price_wei)),
        "predictedPriceUsd": usd,
        "interval": {
            "low": low,
            "high": high,
            "lowWei": Decimal128(str(low_wei)),
            "highWei": Decimal128(str(high_wei)),
            "confidenceLevel": CONFIDENCE_LEVEL,
        },
        "confidenceScore": confidence,
        "dataSourcesUsed": state.record.get("dataSourcesUsed") or [],
        "modelVersion": state.record["version"],
        "inputs": {
            "marketData": {
                "listingPrice": example.listing_price,
                "previousSales": len(example.previous_sales),
                "priceUnit": currency,
            },
            "assetSpecific": model.space.inputs(example),
            "economicIndicators": {**example.index_levels, "usdPerEth": state.usd_per_eth},
            "sentimentAnalysis": {},
        },
        "featureImportance": [
            {"feature": a.feature, "importance": round(a.importance, 6), "direction": a.direction}
            for a in attributions
        ],
        "performanceMetrics": {"accuracy": None, "errorMargin": None, "calibration": None},
        # a current appraisal waits for its round (app/oracle/rounds.py); a historical one joins none
        "status": "accepted" if state.historical else "pending",
        "operator": None,
        "round": None,
        "onChainReference": None,
        "jobId": state.job_id,
        "outcome": None,
        "createdAt": state.now,
    }
    appraised = assets_service.AppraisedPrice(
        token_id=token,
        asset_id=asset.get("_id"),
        prediction_id=identifier,
        at=state.at,
        price=price,
        price_wei=price_wei,
        low=low,
        high=high,
        confidence=confidence,
        model_version=state.record["version"],
        price_usd=usd,
        factors=[(a.feature, a.importance, float(a.direction)) for a in attributions],
        price_set_at=(asset.get("currentPrice") or {}).get("updatedAt"),
        appraised_at=(asset.get("appraisal") or {}).get("timestamp"),
    )
    return document, appraised
