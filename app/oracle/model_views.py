"""What the model, prediction and performance routes show of the stored documents.

A prediction's `inputs` (the feature values, listing and index levels it used) go to the operator who
submitted it and to admins, and a platform appraisal's to signed-in callers; an artifact's key in the
bucket goes to nobody.
"""

from __future__ import annotations

from typing import Any

import msgspec
from bson import Decimal128

from app.lib.money import wei_string
from app.oracle import model_schemas as schemas


def _plain(value: Any) -> Any:
    """Stored values as JSON-able ones: Int64 as int, Decimal128 as its decimal string, NaN as None."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    return value


def _convert(value: Any, kind: type) -> Any:
    return msgspec.convert(_plain(value), kind, strict=False)


def model_out(record: dict[str, Any], current: str | None) -> schemas.ModelOut:
    artifact = record.get("artifact")
    types = [
        {
            "needed": None,
            "trainedFrom": None,
            "trainedTo": None,
            "features": {},
            "globalImportance": [],
            "backtest": None,
            **{key: value for key, value in t.items() if key != "error"},
        }
        for t in record.get("types") or []
    ]
    return schemas.ModelOut(
        version=record["version"],
        status=record["status"],
        isCurrent=record["version"] == current,
        jobId=record.get("jobId"),
        dataUntil=record.get("dataUntil"),
        dataHash=record.get("dataHash"),
        counts=record.get("counts") or {},
        params=record.get("params") or {},
        types=_convert(types, list[schemas.TypeModelOut]),
        backtest=_convert(record["backtest"], schemas.VersionBacktest) if record.get("backtest") else None,
        dataSourcesUsed=record.get("dataSourcesUsed") or [],
        artifact=schemas.ArtifactOut(sha256=artifact["sha256"], bytes=artifact["bytes"])
        if artifact
        else None,
        error=record.get("error"),
        createdAt=record["createdAt"],
        completedAt=record.get("completedAt"),
    )


def prediction_out(doc: dict[str, Any], *, show_inputs: bool) -> schemas.PredictionOut:
    interval = doc.get("interval")
    outcome = doc.get("outcome")
    return schemas.PredictionOut(
        id=str(doc["_id"]),
        tokenId=doc["tokenId"],
        assetType=doc.get("assetType"),
        timestamp=doc["timestamp"],
        asOf=doc.get("asOf"),
        predictedPrice=doc["predictedPrice"],
        predictedPriceWei=wei_string(doc.get("predictedPriceWei")),
        predictedPriceUsd=doc.get("predictedPriceUsd"),
        interval=schemas.IntervalOut(
            low=interval["low"],
            high=interval["high"],
            lowWei=wei_string(interval["lowWei"]),
            highWei=wei_string(interval["highWei"]),
            confidenceLevel=interval.get("confidenceLevel", 0.9),
        )
        if interval
        else None,
        confidenceScore=doc["confidenceScore"],
        dataSourcesUsed=doc.get("dataSourcesUsed") or [],
        modelVersion=doc["modelVersion"],
        featureImportance=[
            schemas.AttributionOut(feature=f["feature"], importance=f["importance"], direction=f["direction"])
            for f in doc.get("featureImportance") or []
        ],
        performanceMetrics=dict(doc.get("performanceMetrics") or {}),
        status=doc.get("status", "pending"),
        operator=doc.get("operator"),
        round=doc.get("round"),
        rejectionReason=doc.get("rejectionReason"),
        onChainReference=_reference(doc.get("onChainReference")),
        outcome=schemas.OutcomeOut(
            soldAt=outcome["soldAt"],
            price=outcome["price"],
            priceWei=wei_string(outcome["priceWei"]),
            source=outcome["source"],
            ape=outcome["ape"],
            covered=outcome["covered"],
        )
        if outcome
        else None,
        inputs=_plain(doc.get("inputs")) if show_inputs else None,
    )


def performance_out(
    record: dict[str, Any], current: str | None, live: dict[str, Any], operators: list[dict[str, Any]]
) -> schemas.PerformanceOut:
    return schemas.PerformanceOut(
        modelVersion=record["version"],
        isCurrent=record["version"] == current,
        completedAt=record.get("completedAt"),
        dataUntil=record.get("dataUntil"),
        backtest=_convert(record["backtest"], schemas.VersionBacktest) if record.get("backtest") else None,
        live=_convert(live, schemas.LedgerOut),
        operators=_convert(operators, list[schemas.OperatorOut]),
    )


def _reference(reference: dict[str, Any] | None) -> schemas.ChainReferenceOut | None:
    return msgspec.convert(reference, schemas.ChainReferenceOut) if reference else None
