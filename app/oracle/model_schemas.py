"""Request and response bodies of the oracle's models, appraisals, predictions and performance (seed plan
3.1.4 and 4.3 field names, camelCase). Prices are in ETH, with the exact wei as a decimal string."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta

from app.lib.params import MAX_INT64
from app.lib.schemas import ClientTimestamp, RequestBody, Schema

MAX_APPRAISAL_TOKENS = 10_000
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TokenId = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Version = Annotated[str, Meta(pattern=VERSION[:-1] + r"\Z", extra_json_schema={"pattern": VERSION})]


# ---------------------------------------------------------------- requests


class TrainRequest(RequestBody):
    """Train a new version; with `asOf`, only on the sales before that time (for historical appraisals
    and backtests: such a version appraises as of `asOf` and later)."""

    asOf: ClientTimestamp | None = None


class AppraisalRequest(RequestBody):
    """Appraise every asset, or these; as of now, or as of a past time (`asOf`: the latest version
    trained only on sales before it, unless `modelVersion` names one)."""

    tokenIds: Annotated[list[TokenId], Meta(min_length=1, max_length=MAX_APPRAISAL_TOKENS)] | None = None
    asOf: ClientTimestamp | None = None
    modelVersion: Version | None = None


class JobQueued(Schema):
    jobId: str
    statusUrl: str


# ---------------------------------------------------------------- models


class ImportanceOut(Schema):
    feature: str
    importance: float


class Accuracy(Schema):
    """Absolute percentage errors as fractions (0.055 is 5.5%)."""

    count: int
    mdape: float | None
    p95Ape: float | None
    mape: float | None


class ModelAccuracy(Accuracy):
    coverage: dict[str, float]  # interval level ("50", "80", "90", "95") -> share of sales inside it
    meanIntervalWidth: dict[str, float]  # level -> mean of (high - low) / predicted


class UnitBaseline(Accuracy):
    unit: str | None  # the size attribute: the median price per unit of it, times it


class CategoryBaseline(Accuracy):
    category: str | None  # the categorical attribute: the median price of its category


class Baselines(Schema):
    medianPerUnit: UnitBaseline
    medianPerCategory: CategoryBaseline


class Backtest(Schema):
    """Trained on the earliest sales, tested on the latest (`splitAt` divides them; per type)."""

    trainRows: int
    testRows: int
    splitAt: str | None
    model: ModelAccuracy
    baselines: Baselines


class VersionBacktest(Schema):
    overall: Backtest | None
    byType: dict[str, Backtest]


class TypeModelOut(Schema):
    """One asset type of a version: `ready`, `insufficient_data` (it had `rows`, it needs `needed`), or
    `failed` (its data could not be fitted: `error` says why; the other types train as usual)."""

    assetType: str
    status: Literal["ready", "insufficient_data", "failed"]
    rows: int
    needed: int | None
    currency: Literal["ETH", "USD"]
    trainedFrom: datetime | None
    trainedTo: datetime | None
    features: dict[str, Any]
    globalImportance: list[ImportanceOut]
    backtest: Backtest | None
    error: str | None = None


class ArtifactOut(Schema):
    sha256: str
    bytes: int


class ModelOut(Schema):
    """A version: its data (hash, counts, sources), parameters, types and backtest metrics."""

    version: str
    status: Literal["training", "ready", "failed"]
    isCurrent: bool
    jobId: str | None
    dataUntil: datetime | None
    dataHash: str | None
    counts: dict[str, int]
    params: dict[str, Any]
    types: list[TypeModelOut]
    backtest: VersionBacktest | None
    dataSourcesUsed: list[str]
    artifact: ArtifactOut | None
    error: str | None
    createdAt: datetime
    completedAt: datetime | None


class ModelPage(Schema):
    items: list[ModelOut]
    nextCursor: str | None
    limit: int


# ---------------------------------------------------------------- predictions


class IntervalOut(Schema):
    low: float
    high: float
    lowWei: str
    highWei: str
    confidenceLevel: float


class AttributionOut(Schema):
    feature: str
    importance: float  # 0-1
    direction: float  # +1 raised the price, -1 lowered it


class ChainReferenceOut(Schema):
    """The transaction that carried a price to the PriceOracle, and its block."""

    transactionHash: str | None = None
    blockNumber: int | None = None
    timestamp: datetime | None = None


class OutcomeOut(Schema):
    soldAt: datetime
    price: float
    priceWei: str
    source: str
    ape: float
    covered: bool


class PredictionOut(Schema):
    """One AI oracle prediction (seed 3.1.4): the platform's appraisal or an operator's submission.
    `inputs` is shown to the operator who submitted it and to admins (a platform appraisal's, to any
    signed-in caller)."""

    id: str
    tokenId: int
    assetType: str | None
    timestamp: datetime
    asOf: datetime | None
    predictedPrice: float
    predictedPriceWei: str | None
    predictedPriceUsd: float | None
    interval: IntervalOut | None
    confidenceScore: float
    dataSourcesUsed: list[str]
    modelVersion: str
    featureImportance: list[AttributionOut]
    performanceMetrics: dict[str, float | None]
    # pending until its round closes; then rejected, or accepted (submitted first while the round's
    # answer is on its way to the PriceOracle: accepted once its push settles, with `onChainReference`)
    status: Literal["pending", "submitted", "accepted", "rejected"]
    operator: str | None  # the operator's wallet; None for the platform's own appraisal
    round: str | None  # the round it took part in (GET /api/oracle/rounds/{roundId})
    rejectionReason: str | None
    onChainReference: ChainReferenceOut | None  # the push that published its round's answer
    outcome: OutcomeOut | None
    inputs: dict[str, Any] | None


class PredictionPage(Schema):
    items: list[PredictionOut]
    nextCursor: str | None
    limit: int


# ---------------------------------------------------------------- performance


class LedgerFigures(Accuracy):
    coverage90: float | None


class LedgerOut(Schema):
    """Every appraisal of the version scored against the asset's next real sale (on-chain or a source's)."""

    count: int
    mdape: float | None
    p95Ape: float | None
    mape: float | None
    coverage90: float | None
    byType: dict[str, LedgerFigures]


class LiveFigures(Schema):
    """Predictions scored against the asset's next real sale: APEs as fractions (0.055 is 5.5%)."""

    count: int
    mdape: float | None
    p95Ape: float | None
    coverage: float | None  # the share of sales inside the predicted band


class OperatorOut(Schema):
    operator: str  # a wallet address, or "platform"
    submissions: int
    accepted: int
    rejected: int
    pending: int
    acceptanceRate: float | None  # accepted / (accepted + rejected)
    rejectedByReason: dict[str, int]
    weight: float  # its weight in the next round
    live: LiveFigures
    lastSubmissionAt: datetime | None


class PerformanceOut(Schema):
    """A version's time-split backtest (MdAPE, p95 APE, MAPE, interval coverage at 50/80/90/95% with the
    mean width, and the naive baselines measured on the same split), and its live ledger."""

    modelVersion: str
    isCurrent: bool
    completedAt: datetime | None
    dataUntil: datetime | None
    backtest: VersionBacktest | None
    live: LedgerOut
    operators: list[OperatorOut]  # every operator's record beside the platform's (GET /api/oracle/operators)
