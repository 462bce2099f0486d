"""Request and response bodies of the operators' submissions, the rounds and the operators' figures (seed plan
3.1.4 and 4.3 field names, camelCase). Prices are in ETH, with the exact wei as a decimal string."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta

from app.lib.schemas import RequestBody, Schema, documented
from app.oracle.model_schemas import ChainReferenceOut, OperatorOut, TokenId, Version

MAX_SOURCES, MAX_FACTORS = 20, 50
MAX_BODY_BYTES = 64 * 1024
ROUND_ID = r"^[0-9]{1,19}-[0-9]{1,12}$"
# Decimal wei, from 1 to 29 digits (2^96 - 1, the most the PriceOracle holds, has 29: a larger amount of
# 29 digits is 400 `amount_out_of_range`).
WeiText = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,28}$")]
# ETH: at least 1 wei, at most 2^96 - 1 wei (checked by the service: `invalid_amount`, `amount_out_of_range`).
MAX_ETH = 79_228_162_514.26433
EthAmount = Annotated[float, documented(minimum=1e-18, maximum=MAX_ETH)]
Name = Annotated[str, Meta(min_length=1, max_length=100)]


class IntervalIn(RequestBody):
    """The band the price lies in: in ETH (`low`, `high`) or exact wei (`lowWei`, `highWei`)."""

    low: EthAmount | None = None
    high: EthAmount | None = None
    lowWei: WeiText | None = None
    highWei: WeiText | None = None


class FactorIn(RequestBody):
    feature: Name
    importance: Annotated[float, Meta(ge=0, le=1)]
    direction: Annotated[float, Meta(ge=-1, le=1)] = 0.0


class InputsIn(RequestBody):
    """What the operator's model saw; shown to that operator (and admins) only."""

    marketData: dict[str, Any] = {}
    assetSpecific: dict[str, Any] = {}
    economicIndicators: dict[str, Any] = {}
    sentimentAnalysis: dict[str, Any] = {}


class PredictionSubmit(RequestBody):
    """An operator's prediction of a token's price (seed 4.3): `predictedPrice` in ETH or
    `predictedPriceWei`, exactly one; an optional band that must hold it (without one, the band its
    confidence stands for is used: confidence = 100 * low / high)."""

    tokenId: TokenId
    confidenceScore: Annotated[float, Meta(ge=0, le=100)]
    modelVersion: Version
    predictedPrice: EthAmount | None = None
    predictedPriceWei: WeiText | None = None
    interval: IntervalIn | None = None
    dataSourcesUsed: Annotated[list[Name], Meta(max_length=MAX_SOURCES)] = []
    featureImportance: Annotated[list[FactorIn], Meta(max_length=MAX_FACTORS)] = []
    inputs: InputsIn | None = None


class RoundRef(Schema):
    id: str
    closesAt: datetime
    status: str


class PredictionCreated(Schema):
    predictionId: str
    status: Literal["pending", "submitted", "accepted", "rejected"]
    round: RoundRef | None


# ---------------------------------------------------------------- rounds


class ParticipantOut(Schema):
    predictionId: str
    operator: str  # a wallet address, or "platform"
    price: float
    priceWei: str
    lowWei: str
    highWei: str
    confidence: float
    effectiveConfidence: float  # after the penalty for unhealthy sources
    weight: float
    timestamp: datetime
    carried: bool  # the platform's latest appraisal, made before the round opened
    unhealthySources: list[str]
    status: Literal["accepted", "rejected"]
    rejectionReason: str | None


class AnswerOut(Schema):
    price: float
    priceWei: str
    low: float
    lowWei: str
    high: float
    highWei: str
    confidence: float
    observedAt: datetime
    participants: int


class GateOut(Schema):
    gate: Literal["bounds", "jump", "sources", "confidence", "age"]
    passed: bool
    detail: str


class DecisionOut(Schema):
    decision: Literal["published", "skipped", "abstained", "superseded"]
    reason: str
    facts: dict[str, float | int | None]
    at: datetime


class PublicationOut(Schema):
    status: Literal["submitted", "accepted", "failed", "superseded", "expired"]
    roundId: int
    onChainReference: ChainReferenceOut | None
    error: str | None


class RoundOut(Schema):
    """A round: who took part and the verdict on each, the answer, the gates, and the decision."""

    id: str
    tokenId: int
    assetType: str | None
    openedAt: datetime
    closesAt: datetime
    status: Literal["open", "closing", "closed", "rejected", "no_quorum"]
    submissions: int
    participants: list[ParticipantOut]
    answer: AnswerOut | None
    basis: Literal["median", "platform"] | None  # the platform's appraisal alone below three participants
    gates: list[GateOut]
    rejectedBy: str | None
    rejectionReason: str | None
    decision: DecisionOut | None
    publication: PublicationOut | None
    closedAt: datetime | None


class RoundPage(Schema):
    items: list[RoundOut]
    nextCursor: str | None
    limit: int


# ---------------------------------------------------------------- operators


class OperatorsOut(Schema):
    """Every operator (and the platform) with its submissions, verdicts, weight and live record."""

    items: list[OperatorOut]
