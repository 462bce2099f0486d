"""Oracle rounds: per token and time window, the platform's appraisal and the operators' submissions,
combined into one answer, gated, and decided for publication (app/oracle/rounds.py). Every round is kept,
with its participants and the verdict on each, for audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import IndexModel

from app.lib.chain import ChainReference
from app.lib.money import Wei
from app.lib.timeutil import utcnow

PLATFORM = "platform"  # the participant key of the platform's own appraisal
ROUND_STATUSES = ("open", "closing", "closed", "rejected", "no_quorum")


class Participant(BaseModel):
    predictionId: PydanticObjectId
    operator: str  # a wallet address, or "platform"
    priceWei: Wei
    lowWei: Wei
    highWei: Wei
    confidence: float  # as submitted
    effectiveConfidence: float  # after the penalty for unhealthy sources
    weight: float
    timestamp: datetime
    carried: bool = False  # the platform's latest appraisal, made before the round opened
    unhealthySources: list[str] = Field(default_factory=list)
    status: Literal["accepted", "rejected"]
    rejectionReason: str | None = None


class Answer(BaseModel):
    price: float  # ETH
    priceWei: Wei
    low: float
    lowWei: Wei
    high: float
    highWei: Wei
    confidence: float
    observedAt: datetime
    participants: int


class GateResult(BaseModel):
    gate: str
    passed: bool
    detail: str


class RoundDecision(BaseModel):
    decision: Literal["published", "skipped", "abstained", "superseded"]
    reason: str
    facts: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class RoundPublication(BaseModel):
    """The push of a published round: `submitted` until final, then `accepted` or `failed`."""

    status: Literal["submitted", "accepted", "failed", "superseded", "expired"]
    roundId: int  # the round id on the PriceOracle: the round's close in milliseconds
    outboxKey: str | None = None
    onChainReference: ChainReference | None = None
    error: str | None = None


class OracleRound(Document):
    key: str  # "{tokenId}-{window number}"
    tokenId: int
    assetId: PydanticObjectId | None = None
    assetType: str | None = None
    openedAt: datetime
    closesAt: datetime
    # open -> closing (one closer holds it, from `closingAt`) -> closed | rejected | no_quorum
    status: Literal["open", "closing", "closed", "rejected", "no_quorum"] = "open"
    closingAt: datetime | None = None
    closer: str | None = None  # the closing pass that holds it
    closedBy: str | None = None  # the closing pass that closed it
    submissions: int = 0  # operators' submissions received while open
    members: list[PydanticObjectId] = Field(default_factory=list)  # the predictions that joined in time
    participants: list[Participant] = Field(default_factory=list)
    answer: Answer | None = None
    # "median" of the accepted participants (three or more), or the "platform" appraisal alone (fewer)
    basis: Literal["median", "platform"] | None = None
    gates: list[GateResult] = Field(default_factory=list)
    rejectionReason: str | None = None  # the first gate that failed, or why no answer was reached
    rejectedBy: str | None = None  # that gate's name, or "quorum"
    decision: RoundDecision | None = None
    publication: RoundPublication | None = None
    closedAt: datetime | None = None
    createdAt: datetime = Field(default_factory=utcnow)
    # False from the write that closes the round until its `oracle_round_closed` is in the events outbox
    announced: bool | None = None

    class Settings:
        name = "oracleRounds"
        indexes = [
            IndexModel([("key", pymongo.ASCENDING)], unique=True, name="key_unique"),
            IndexModel(
                [("announced", pymongo.ASCENDING)],
                name="not_announced",
                partialFilterExpression={"announced": False},
            ),
            IndexModel(
                [("status", pymongo.ASCENDING), ("closesAt", pymongo.ASCENDING)], name="status_closesAt"
            ),
            # The last published round of a token, and a token's rounds newest first.
            IndexModel(
                [("tokenId", pymongo.ASCENDING), ("closesAt", pymongo.DESCENDING)], name="tokenId_closesAt"
            ),
            IndexModel([("closesAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="closesAt_id"),
            # The rounds decided `published` not pushed yet (status null), and the pushes not final.
            IndexModel(
                [("decision.decision", pymongo.ASCENDING), ("publication.status", pymongo.ASCENDING)],
                name="decision_publication",
            ),
        ]
