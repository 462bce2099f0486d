"""Training a model version (the `oracle.train` job): every asset type with enough sales gets a model.

The run reads the latest sales (before `dataUntil` when given) and the index series, builds one example
per sale (app/oracle/examples.py), and per asset type fits the model and backtests it (the pure package
`oracle/`); the fitting runs in a thread, so the worker's other jobs go on. A type with fewer sales than
ORACLE_MIN_TRAINING_ROWS gets no model and the status `insufficient_data`; a version with no ready type
fails, and the current version stays. The artifact goes to S3 and the record to `oracleModels`; the
version becomes current when it is recorded ready. A retried job finds its record by job id and either
finishes it or, when it was finished, answers it as it is.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
import structlog
from threadpoolctl import threadpool_limits

from app.config import Settings
from app.lib.timeutil import as_utc, utcnow
from app.oracle import examples, model_repository, registry
from oracle import metrics
from oracle.backtest import backtest
from oracle.model import InsufficientData, ModelParams, fit

log = structlog.get_logger(__name__)


def _version(now: datetime) -> str:
    return f"{now:%Y%m%d.%H%M%S}-{secrets.token_hex(3)}"


def params_for(settings: Settings) -> ModelParams:
    return ModelParams(min_rows=settings.oracle.min_training_rows, bag=settings.oracle.point_bag)


def _examples_by_type(sales: list[dict[str, Any]], points) -> tuple[dict[str, tuple[list, list]], dict, int]:
    """Per type, its examples and prices in its unit; the units; the sales left out (no price in it)."""
    currencies = examples.type_currencies(sales)
    levels = examples.IndexLevels(points)
    repeat = examples.repeat_sales(sales, currencies)
    grouped: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    dropped = 0
    for sale in sales:
        price = examples.sale_price(sale, currencies[sale["assetType"]])
        if price is None or not price > 0:
            dropped += 1
            continue
        at = as_utc(sale["soldAt"])
        token = sale.get("tokenId")
        previous = tuple(p for p in repeat.get(token, ()) if p[0] < at) if token is not None else ()
        found, prices = grouped[sale["assetType"]]
        found.append(examples.sale_example(sale, levels, previous, currencies[sale["assetType"]]))
        prices.append(price)
    return dict(grouped), currencies, dropped


def _type_record(asset_type: str, model, found: list, backtested: dict | None, currency: str) -> dict:
    return {
        "assetType": asset_type,
        "status": "ready",
        "rows": len(found),
        "needed": None,
        "currency": currency,
        "trainedFrom": model.trained_from,
        "trainedTo": model.trained_to,
        "features": model.space.summary(),
        "globalImportance": [
            {"feature": name, "importance": round(float(value), 6)} for name, value in model.global_importance
        ],
        "backtest": backtested,
        "error": None,
    }


def _overall(rows: list[dict[str, np.ndarray]], train_rows: int) -> dict[str, Any] | None:
    """The backtest over every type's test sales together (medians are not averages of medians)."""
    if not rows:
        return None
    joined = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
    actual, predicted = joined["actual"], joined["predicted"]
    levels = sorted({key.split(":")[1] for key in joined if key.startswith("low:")})
    model = {
        **metrics.accuracy(actual, predicted),
        "coverage": {
            level: metrics.coverage(actual, joined[f"low:{level}"], joined[f"high:{level}"])
            for level in levels
        },
        "meanIntervalWidth": {
            level: metrics.mean_width(joined[f"low:{level}"], joined[f"high:{level}"], predicted)
            for level in levels
        },
    }
    baselines = {
        "medianPerUnit": {"unit": None, **metrics.accuracy(actual, joined["baseline:medianPerUnit"])},
        "medianPerCategory": {
            "category": None,
            **metrics.accuracy(actual, joined["baseline:medianPerCategory"]),
        },
    }
    # Each type is split at its own time: `splitAt` is per type only.
    return {
        "trainRows": train_rows,
        "testRows": len(actual),
        "splitAt": None,
        "model": model,
        "baselines": baselines,
    }


def fit_version(
    sales: list[dict[str, Any]], points, params: ModelParams, version: str, threads: int = 1
) -> dict[str, Any]:
    """Fit and backtest every type (CPU-bound, no I/O) on at most `threads` OpenMP threads: the bundle and
    what its record says."""
    with threadpool_limits(limits=threads):
        return _fit_version(sales, points, params, version)


def _fit_version(sales: list[dict[str, Any]], points, params: ModelParams, version: str) -> dict[str, Any]:
    grouped, currencies, dropped = _examples_by_type(sales, points)
    bundle = registry.Bundle(version)
    types, rows_for_overall, by_type = [], [], {}
    for asset_type in sorted(grouped):
        found, prices = grouped[asset_type]
        currency = currencies[asset_type]
        try:
            model = fit(asset_type, found, np.asarray(prices, dtype=float), params)
        except InsufficientData as exc:
            types.append(
                {
                    "assetType": asset_type,
                    "status": "insufficient_data",
                    "rows": exc.rows,
                    "needed": exc.needed,
                    "currency": currency,
                }
            )
            continue
        except (ValueError, ArithmeticError) as exc:  # data this type's fit cannot take: its own failure
            failed = {"assetType": asset_type, "status": "failed", "rows": len(found), "currency": currency}
            failed["error"] = repr(exc)[:300]
            log.error(
                "oracle.train.type_failed", asset_type=asset_type, rows=len(found), error=failed["error"]
            )
            types.append(failed)
            continue
        try:
            backtested = backtest(
                asset_type, found, np.asarray(prices, dtype=float), params, return_rows=True
            )
            rows_for_overall.append(backtested.pop("rows"))
            by_type[asset_type] = backtested
        except InsufficientData:
            backtested = None
        except (ValueError, ArithmeticError) as exc:  # the model stands; only its report is missing
            log.error("oracle.train.backtest_failed", asset_type=asset_type, error=repr(exc)[:300])
            backtested = None
        bundle.models[asset_type] = model
        bundle.currencies[asset_type] = currency
        types.append(_type_record(asset_type, model, found, backtested, currency))
    return {
        "bundle": bundle,
        "types": types,
        "backtest": {
            "overall": _overall(rows_for_overall, sum(b["trainRows"] for b in by_type.values())),
            "byType": by_type,
        }
        if by_type
        else None,
        "counts": {
            "rows": len(sales),
            "dropped": dropped,
            "types": len(types),
            "readyTypes": len(bundle.models),
            "indexPoints": len(points),
        },
    }


async def train(
    clients,
    settings: Settings,
    *,
    job_id: str,
    requested_by: str | None = None,
    data_until: datetime | None = None,
) -> dict[str, Any]:
    """Train a version (job `job_id`): ready when at least one type has a model; its summary."""
    now = utcnow()
    params = params_for(settings)
    record = await model_repository.start_model(
        {
            "version": _version(now),
            "status": "training",
            "jobId": job_id,
            "requestedBy": requested_by,
            "dataUntil": data_until,
            "params": params.as_dict(),
            "counts": {},
            "types": [],
            "dataSourcesUsed": [],
            "createdAt": now,
        }
    )
    if record["status"] != "training":
        return summary(record)
    until = record.get("dataUntil")
    sales = await model_repository.training_sales(until, settings.oracle.max_training_rows)
    points = await model_repository.index_points(until)
    try:
        fitted = await asyncio.to_thread(
            fit_version, sales, points, params, record["version"], settings.oracle.model_threads
        )
        artifact = await registry.save(clients.storage, fitted["bundle"]) if fitted["bundle"].models else None
    except asyncio.CancelledError:  # the job's time ran out: say so, rather than "training" for ever
        await asyncio.shield(_fail(record, "training_timeout"))
        raise
    except Exception:  # a fault of the data, the model or the artifact's store
        log.exception("oracle.train.failed", version=record["version"])
        return summary({**record, **await _fail(record, "training_failed")})
    changes: dict[str, Any] = {
        "dataHash": examples.data_hash(sales, points),
        "counts": fitted["counts"],
        "types": fitted["types"],
        "backtest": fitted["backtest"],
        "dataSourcesUsed": sorted({sale["sourceName"] for sale in sales if sale.get("sourceName")}),
        "completedAt": utcnow(),
    }
    if artifact is not None:
        changes["artifact"] = artifact
        changes["status"] = "ready"
    else:
        changes["status"] = "failed"
        changes["error"] = "insufficient_data" if sales else "no_training_data"
    await model_repository.finish_model(record["_id"], changes)
    log.info("oracle.trained", version=record["version"], status=changes["status"], **fitted["counts"])
    return summary({**record, **changes})


async def _fail(record: dict[str, Any], error: str) -> dict[str, Any]:
    failed = {"status": "failed", "error": error, "completedAt": utcnow()}
    await model_repository.finish_model(record["_id"], failed)
    return failed


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the job answers (GET /api/jobs/{jobId}): the version, its status, and its counts."""
    return {
        "modelVersion": record["version"],
        "status": record["status"],
        "error": record.get("error"),
        "counts": record.get("counts") or {},
        "types": {t["assetType"]: t["status"] for t in record.get("types") or []},
    }
