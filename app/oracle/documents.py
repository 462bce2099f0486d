"""AI oracle predictions and the data sources behind them (seed plan 3.1.4, 3.1.5): the sources, and the
comparable sales and index points they bring."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer
from pymongo import IndexModel

from app.lib.chain import ChainReference
from app.lib.money import Wei
from app.lib.timeutil import utcnow


class OracleInputs(BaseModel):
    marketData: dict[str, Any] = Field(default_factory=dict)
    assetSpecific: dict[str, Any] = Field(default_factory=dict)
    economicIndicators: dict[str, Any] = Field(default_factory=dict)
    sentimentAnalysis: dict[str, Any] = Field(default_factory=dict)


class FeatureImportance(BaseModel):
    feature: str
    importance: float  # 0-1
    direction: float  # sign of the influence


class PerformanceMetrics(BaseModel):
    """Filled by the live ledger when the asset next sells: 1 - APE, the APE, and 1 when the sale fell
    inside the interval (0 when not)."""

    accuracy: float | None = None
    errorMargin: float | None = None
    calibration: float | None = None


class PriceInterval(BaseModel):
    """The calibrated interval of a prediction, in ETH and exact wei."""

    low: float
    high: float
    lowWei: Wei
    highWei: Wei
    confidenceLevel: float = 0.9


class Outcome(BaseModel):
    """The next real sale of the asset after the prediction, which scores it (the live ledger)."""

    soldAt: datetime
    price: float  # ETH
    priceWei: Wei
    source: str  # "chain:<tx hash>" or "source:<data source name>"
    ape: float  # |predicted - sold| / sold
    covered: bool  # the sale fell inside the interval
    scoredAt: datetime


class AIOracleData(Document):
    assetId: PydanticObjectId | None = None
    tokenId: int
    timestamp: datetime = Field(default_factory=utcnow)
    predictedPrice: float
    predictedPriceWei: Wei | None = None
    predictedPriceUsd: float | None = None
    interval: PriceInterval | None = None
    confidenceScore: float = Field(ge=0, le=100)
    dataSourcesUsed: list[str] = Field(default_factory=list)
    modelVersion: str
    inputs: OracleInputs = Field(default_factory=OracleInputs)
    featureImportance: list[FeatureImportance] = Field(default_factory=list)
    performanceMetrics: PerformanceMetrics = Field(default_factory=PerformanceMetrics)
    status: Literal["pending", "submitted", "rejected", "accepted"] = "pending"
    onChainReference: ChainReference | None = None
    assetType: str | None = None
    asOf: datetime | None = None  # a historical appraisal: the time it is as of (then `timestamp` too)
    jobId: str | None = None  # the appraisal run that wrote it
    outcome: Outcome | None = None
    # Who made it: an operator's wallet (and the key it used), or None for the platform's own appraisal.
    operator: str | None = None
    apiKeyId: str | None = None
    idempotencyKey: str | None = None  # an operator's Idempotency-Key, unique per operator
    requestHash: str | None = None  # sha256 of the request it came with, so a reused key is told apart
    # The round it takes part in (app/oracle/round_documents.py): `pending` while the round is open, then
    # `accepted` or `rejected` with a `rejectionReason`.
    round: str | None = None
    rejectionReason: str | None = None
    rejectionCode: str | None = None  # the reason's first word: outside_band, superseded, late
    createdAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "aiOracleData"
        indexes = [
            IndexModel(
                [("tokenId", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="tokenId_timestamp"
            ),
            IndexModel(
                [("assetId", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="assetId_timestamp"
            ),
            IndexModel([("status", pymongo.ASCENDING)], name="status"),
            # The live ledger: predictions of a version not scored yet, and the scored ones.
            IndexModel(
                [("modelVersion", pymongo.ASCENDING), ("outcome.soldAt", pymongo.ASCENDING)],
                name="modelVersion_outcome",
            ),
            IndexModel(
                [("outcome", pymongo.ASCENDING), ("tokenId", pymongo.ASCENDING)], name="outcome_tokenId"
            ),
            # The platform's appraisals not in a round yet, and a round's participants.
            IndexModel(
                [("round", pymongo.ASCENDING), ("timestamp", pymongo.ASCENDING)], name="round_timestamp"
            ),
            # An operator's submissions, newest first, and the scored ones that weigh its word.
            IndexModel(
                [("operator", pymongo.ASCENDING), ("createdAt", pymongo.DESCENDING)],
                name="operator_createdAt",
            ),
            IndexModel(
                [("operator", pymongo.ASCENDING), ("idempotencyKey", pymongo.ASCENDING)],
                unique=True,
                partialFilterExpression={"idempotencyKey": {"$type": "string"}},
                name="operator_idempotencyKey_unique",
            ),
            # The ledger's new predictions, and the pages of GET /api/oracle/predictions.
            IndexModel([("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="createdAt_id"),
        ]
        retired_indexes = ["publication_timestamp", "createdAt"]


class Authentication(BaseModel):
    header: str
    value: str  # sealed (app/lib/crypto.py): never stored or returned in the clear


class DataSourceConfiguration(BaseModel):
    refreshInterval: int = 3600  # seconds
    # Column names by role (price, currency, soldAt, externalId, assetType; timestamp, value), and
    # constants for columns a source lacks (currency, assetType, attributes).
    mapping: dict[str, str | None] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)  # name -> sealed value
    authentication: Authentication | None = None
    # api sources: where the rows are in each JSON page, and how the next page is found.
    rowsPath: str | None = None
    nextUrlPath: str | None = None
    pageParam: str | None = None
    maxPages: int = 100
    # index sources: the series their points belong to (ETH/USD converts USD sales); default the name.
    series: str | None = None


class DataSourceStatus(BaseModel):
    isEnabled: bool = True
    lastFetchAt: datetime | None = None  # the last successful fetch
    lastAttemptAt: datetime | None = None
    nextFetchAt: datetime | None = None
    errorCount: int = 0  # consecutive failed fetches
    lastError: str | None = None  # a code
    lastErrorMessage: str | None = None  # the platform's own words, never a library's exception text


class FetchRecord(BaseModel):
    """One fetch, kept among the last few for the reliability and latency figures."""

    at: datetime
    ok: bool
    latencyMs: float
    rowsAccepted: int = 0
    rowsRejected: int = 0
    error: str | None = None


class DataSourceMetrics(BaseModel):
    reliability: float | None = None  # 0-100: share of the recent fetches that succeeded
    latency: float | None = None  # ms: mean over the recent successful fetches
    priceAccuracy: float | None = None
    fetches: int = 0
    rowsAccepted: int = 0  # over every fetch
    rowsRejected: int = 0
    recent: list[FetchRecord] = Field(default_factory=list)


class RejectedRow(BaseModel):
    row: int  # the line (CSV, JSON Lines) or the position in its page (JSON), from 1
    reason: str


class LastFetch(BaseModel):
    """What the last fetch did, row by row."""

    at: datetime
    ok: bool
    latencyMs: float
    bytes: int = 0
    pages: int = 0
    rowsAccepted: int = 0
    rowsRejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0  # rows repeated within the fetch: the last one counts
    rejectedByReason: dict[str, int] = Field(default_factory=dict)
    rejectedSamples: list[RejectedRow] = Field(default_factory=list)
    error: str | None = None


class DataSource(Document):
    name: str
    type: Literal["api", "file", "stream"]
    kind: Literal["sales", "index"] = "sales"
    url: str | None = None
    format: Literal["csv", "jsonl", "json"] = "csv"
    description: str = ""
    configuration: DataSourceConfiguration = Field(default_factory=DataSourceConfiguration)
    status: DataSourceStatus = Field(default_factory=DataSourceStatus)
    metrics: DataSourceMetrics = Field(default_factory=DataSourceMetrics)
    lastFetch: LastFetch | None = None
    aiWeighting: float = Field(default=0.5, ge=0, le=1)
    createdBy: str | None = None
    createdAt: datetime = Field(default_factory=utcnow)
    updatedAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "dataSources"
        indexes = [
            IndexModel([("name", pymongo.ASCENDING)], unique=True, name="name_unique"),
            IndexModel(
                [("status.isEnabled", pymongo.ASCENDING), ("status.nextFetchAt", pymongo.ASCENDING)],
                name="due",
            ),
            IndexModel([("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="createdAt_id"),
        ]


class ComparableSale(Document):
    """A sale from a `sales` source, priced in ETH (exact wei beside it) at its sale time."""

    sourceId: PydanticObjectId
    sourceName: str
    externalId: str
    assetType: str
    soldAt: datetime
    price: float  # ETH, for sorting and charts
    priceWei: Wei
    priceUsd: float | None = None
    currency: Literal["ETH", "USD"]
    originalPrice: str  # as the source gave it, in `currency`, exactly
    usdPerEth: str | None = None  # the ETH/USD rate the conversion used, exactly
    attributes: dict[str, Any] = Field(default_factory=dict)  # every other column: numbers or categories
    tokenId: int | None = None  # the platform asset sold, when the source names it
    createdAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "comparableSales"
        indexes = [
            IndexModel(
                [("sourceId", pymongo.ASCENDING), ("externalId", pymongo.ASCENDING)],
                unique=True,
                name="sourceId_externalId_unique",
            ),
            IndexModel(
                [("assetType", pymongo.ASCENDING), ("soldAt", pymongo.ASCENDING)], name="assetType_soldAt"
            ),
            IndexModel([("soldAt", pymongo.ASCENDING)], name="soldAt"),
            IndexModel(
                [("tokenId", pymongo.ASCENDING), ("soldAt", pymongo.ASCENDING)], name="tokenId_soldAt"
            ),
        ]


def _from_decimal128(value: object) -> object:
    return value.to_decimal() if hasattr(value, "to_decimal") else value  # bson.Decimal128


# An exact number stored as Decimal128 and shown as a decimal string.
ExactDecimal = Annotated[
    Decimal,
    BeforeValidator(_from_decimal128),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


class IndexPoint(Document):
    """A point of an `index` source's series (ETH/USD in USD per ETH, a price index)."""

    sourceId: PydanticObjectId
    series: str
    timestamp: datetime
    value: float
    valueExact: ExactDecimal  # as the source gave it: conversions use this, not the float
    createdAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "indexPoints"
        indexes = [
            IndexModel(
                [("sourceId", pymongo.ASCENDING), ("timestamp", pymongo.ASCENDING)],
                unique=True,
                name="sourceId_timestamp_unique",
            ),
            IndexModel(
                [("series", pymongo.ASCENDING), ("timestamp", pymongo.ASCENDING)], name="series_timestamp"
            ),
        ]


class ModelArtifact(BaseModel):
    key: str
    sha256: str
    bytes: int


class TypeModelRecord(BaseModel):
    """One asset type of a model version: ready, or why it has no model."""

    assetType: str
    status: Literal["ready", "insufficient_data", "failed"]
    rows: int
    needed: int | None = None  # insufficient_data: the rows a model needs
    currency: Literal["ETH", "USD"] = "ETH"  # the unit it prices in (USD prices are converted at the time)
    trainedFrom: datetime | None = None
    trainedTo: datetime | None = None
    features: dict[str, Any] = Field(default_factory=dict)
    globalImportance: list[dict[str, Any]] = Field(default_factory=list)
    backtest: dict[str, Any] | None = None
    error: str | None = None


class OracleModel(Document):
    """A version of the oracle's model: what it was trained on, how, and how well it backtested.

    The current version is the latest `ready` one by `completedAt`: training another rolls it forward.
    """

    version: str
    status: Literal["training", "ready", "failed"] = "training"
    jobId: str | None = None
    requestedBy: str | None = None
    dataUntil: datetime | None = None  # trained only on sales before this time (None: all)
    dataHash: str | None = None  # sha256 of the training rows, in a canonical order
    counts: dict[str, int] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    types: list[TypeModelRecord] = Field(default_factory=list)
    backtest: dict[str, Any] | None = None
    dataSourcesUsed: list[str] = Field(default_factory=list)
    artifact: ModelArtifact | None = None
    error: str | None = None
    createdAt: datetime = Field(default_factory=utcnow)
    completedAt: datetime | None = None

    class Settings:
        name = "oracleModels"
        indexes = [
            IndexModel([("version", pymongo.ASCENDING)], unique=True, name="version_unique"),
            IndexModel([("jobId", pymongo.ASCENDING)], unique=True, name="jobId_unique"),
            IndexModel(
                [("status", pymongo.ASCENDING), ("completedAt", pymongo.DESCENDING)],
                name="status_completedAt",
            ),
            IndexModel([("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="createdAt_id"),
        ]
