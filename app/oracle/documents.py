"""AI oracle predictions and the data sources behind them (seed plan 3.1.4, 3.1.5)."""

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
    accuracy: float | None = None
    errorMargin: float | None = None
    calibration: float | None = None


class AIOracleData(Document):
    assetId: PydanticObjectId | None = None
    tokenId: int
    timestamp: datetime = Field(default_factory=utcnow)
    predictedPrice: float
    predictedPriceWei: Wei | None = None
    confidenceScore: float = Field(ge=0, le=100)
    dataSourcesUsed: list[str] = Field(default_factory=list)
    modelVersion: str
    inputs: OracleInputs = Field(default_factory=OracleInputs)
    featureImportance: list[FeatureImportance] = Field(default_factory=list)
    performanceMetrics: PerformanceMetrics = Field(default_factory=PerformanceMetrics)
    status: Literal["pending", "submitted", "rejected", "accepted"] = "pending"
    onChainReference: ChainReference | None = None

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
        ]


class DataSourceConfiguration(BaseModel):
    refreshInterval: int = 3600  # seconds
    mapping: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    authentication: dict[str, Any] = Field(default_factory=dict)  # encrypted values only


class DataSourceStatus(BaseModel):
    isEnabled: bool = True
    lastFetchAt: datetime | None = None
    nextFetchAt: datetime | None = None
    errorCount: int = 0
    lastError: str | None = None


class DataSourceMetrics(BaseModel):
    reliability: float | None = None  # 0-100
    latency: float | None = None  # ms
    priceAccuracy: float | None = None


class DataSource(Document):
    name: str
    type: Literal["api", "file", "stream"]
    url: str | None = None
    description: str = ""
    configuration: DataSourceConfiguration = Field(default_factory=DataSourceConfiguration)
    status: DataSourceStatus = Field(default_factory=DataSourceStatus)
    metrics: DataSourceMetrics = Field(default_factory=DataSourceMetrics)
    aiWeighting: float = Field(default=0.5, ge=0, le=1)
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
        ]
