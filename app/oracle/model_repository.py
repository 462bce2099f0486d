"""Every query of the oracle's models and predictions: `oracleModels`, `aiOracleData`, and the training
data read from `comparableSales` and `indexPoints`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.lib.db import in_slices
from app.lib.pagination import Position, Sort, keyset_page
from app.oracle.documents import AIOracleData, ComparableSale, IndexPoint, OracleModel

DUPLICATE_KEY = 11000
MODEL_SORT = Sort("createdAt", -1)
SALE_FIELDS = {
    "sourceId": 1,
    "sourceName": 1,
    "externalId": 1,
    "assetType": 1,
    "soldAt": 1,
    "price": 1,
    "priceWei": 1,
    "priceUsd": 1,
    "currency": 1,
    "attributes": 1,
    "tokenId": 1,
}


def models():
    return OracleModel.get_pymongo_collection()


def predictions():
    return AIOracleData.get_pymongo_collection()


# ---------------------------------------------------------------- training data


async def training_sales(until: datetime | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` comparable sales before `until` (all when None), oldest first."""
    query = {"soldAt": {"$lt": until}} if until is not None else {}
    cursor = ComparableSale.get_pymongo_collection().find(query, SALE_FIELDS).sort("soldAt", -1).limit(limit)
    found = await cursor.to_list(limit)
    found.reverse()
    return found


async def index_points(until: datetime | None = None) -> list[tuple[str, datetime, float]]:
    """Every index point (before `until` when given): (series, time, level)."""
    query = {"timestamp": {"$lt": until}} if until is not None else {}
    cursor = IndexPoint.get_pymongo_collection().find(query, {"series": 1, "timestamp": 1, "value": 1})
    return [(doc["series"], doc["timestamp"], doc["value"]) async for doc in cursor]


async def token_sales(token_ids: list[int], *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Comparable sales a source tied to these platform assets, each token's oldest first (after `since`)."""
    found: list[dict[str, Any]] = []
    for part in in_slices(token_ids):
        query: dict[str, Any] = {"tokenId": {"$in": part}}
        if since is not None:
            query["soldAt"] = {"$gt": since}
        cursor = ComparableSale.get_pymongo_collection().find(query, SALE_FIELDS).sort("soldAt", 1)
        found += await cursor.to_list(None)
    return found


# ---------------------------------------------------------------- models


async def start_model(document: dict[str, Any]) -> dict[str, Any]:
    """The model record of this training job: created on its first run, found again on a retry."""
    try:
        return await models().find_one_and_update(
            {"jobId": document["jobId"]},
            {"$setOnInsert": document},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # two runs of one job raced to insert: the other won
        return await models().find_one({"jobId": document["jobId"]})


async def finish_model(model_id: ObjectId, changes: dict[str, Any]) -> None:
    await models().update_one({"_id": model_id}, {"$set": changes})


async def find_model(version: str) -> dict[str, Any] | None:
    return await models().find_one({"version": version})


async def current_model(as_of: datetime | None = None) -> dict[str, Any] | None:
    """The current version: the latest ready one trained on all the data (a version trained as of a past
    time serves appraisals as of that time, and never takes its place); as of a time, the latest
    trained only on data before it."""
    query: dict[str, Any] = {"status": "ready", "dataUntil": None}
    if as_of is not None:
        query["dataUntil"] = {"$ne": None, "$lte": as_of}
    return await models().find_one(query, sort=[("completedAt", -1), ("_id", -1)])


async def model_page(
    query: dict[str, Any], *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of model versions, newest first."""
    return await keyset_page(
        models(), query, MODEL_SORT, limit=limit, after=after, projection=None, max_time_ms=max_time_ms
    )


# ---------------------------------------------------------------- predictions


async def insert_predictions(documents: list[dict[str, Any]]) -> int:
    """Insert predictions keyed by their ids: a batch written again (a retried job) adds none twice."""
    if not documents:
        return 0
    try:
        return len((await predictions().insert_many(documents, ordered=False)).inserted_ids)
    except BulkWriteError as exc:
        if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
            raise
        return exc.details.get("nInserted", 0)


async def find_prediction(prediction_id: ObjectId) -> dict[str, Any] | None:
    return await predictions().find_one({"_id": prediction_id})


async def tokens_sold_since(since: datetime | None) -> list[int]:
    """Platform assets a source brought a sale of, stored after `since`."""
    query: dict[str, Any] = {"tokenId": {"$ne": None}}
    if since is not None:
        query["createdAt"] = {"$gt": since}
    return sorted(await ComparableSale.get_pymongo_collection().distinct("tokenId", query))


async def tokens_predicted_since(since: datetime | None) -> list[int]:
    """Tokens with a prediction written after `since` (an appraisal as of a past time may already have
    its next sale)."""
    query: dict[str, Any] = {"outcome": None}
    if since is not None:
        query["createdAt"] = {"$gt": since}
    return sorted(await predictions().distinct("tokenId", query))


async def pending_predictions(token_ids: list[int]) -> list[dict[str, Any]]:
    """The predictions of these tokens that no sale has scored yet."""
    projection = {
        "tokenId": 1,
        "timestamp": 1,
        "predictedPrice": 1,
        "interval": 1,
        "modelVersion": 1,
        "operator": 1,
        "confidenceScore": 1,
    }
    found: list[dict[str, Any]] = []
    for part in in_slices(token_ids):
        found += (
            await predictions().find({"tokenId": {"$in": part}, "outcome": None}, projection).to_list(None)
        )
    return found


async def score_predictions(operations: list[UpdateOne]) -> int:
    if not operations:
        return 0
    return (await predictions().bulk_write(operations, ordered=False)).modified_count


async def scored(version: str, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` scored appraisals of a platform version: type, APE, covered (an operator's
    predictions are its own, whatever version it names)."""
    cursor = (
        predictions()
        .find(
            {"modelVersion": version, "operator": None, "outcome": {"$ne": None}},
            {"assetType": 1, "outcome.ape": 1, "outcome.covered": 1},
        )
        .sort("outcome.soldAt", -1)
        .limit(limit)
    )
    return await cursor.to_list(limit)
