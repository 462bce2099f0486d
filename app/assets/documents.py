"""Assets and their price history (seed plan 3.1.1, 3.1.2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field, model_validator
from pymongo import IndexModel

from app.lib.chain import ChainReference
from app.lib.money import Wei
from app.lib.timeutil import utcnow


class Provenance(BaseModel):
    owner: str
    period: str | None = None
    documentation: str | None = None


class Certificate(BaseModel):
    type: str
    issuer: str
    date: datetime | None = None
    fileKey: str | None = None


class AssetMetadata(BaseModel):
    assetLocation: str | None = None
    acquisitionDate: datetime | None = None
    dimensions: str | None = None
    materials: list[str] = Field(default_factory=list)
    creator: str | None = None
    creationDate: datetime | None = None
    condition: str | None = None
    provenance: list[Provenance] = Field(default_factory=list)
    certificates: list[Certificate] = Field(default_factory=list)
    customAttributes: dict[str, Any] = Field(default_factory=dict)


class MediaFile(BaseModel):
    """One stored object with what processing recorded about it."""

    key: str
    contentType: str | None = None
    size: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    status: str = "stored"  # staged, stored, processed, rejected
    error: str | None = None
    # Media pipeline (app/media): what the object is, who may read it, where it came from.
    kind: str | None = None  # image, thumbnail, preview, watermarked, highres, document, model, video
    access: str = "admin"  # public, authenticated, admin (seed 3.2.3)
    category: str | None = None  # documents: certificates, legal, metadata; models: model, texture
    label: str | None = None  # primary, angle1, authenticity, ...
    source: str | None = None  # the original a rendition was made from
    target: str | None = None  # staged uploads: the key the file is promoted to
    uploadedBy: str | None = None
    createdAt: datetime | None = None


class AssetMedia(BaseModel):
    thumbnailUrl: str | None = None
    imageKeys: list[str] = Field(default_factory=list)
    videoKey: str | None = None
    documentKeys: list[str] = Field(default_factory=list)
    modelKey: str | None = None
    files: list[MediaFile] = Field(default_factory=list)
    announced: str | None = None  # the digest of the files' state last announced (`media_processed`)
    announcements: int = 0  # how many were: the next one's key


class CurrentPrice(BaseModel):
    value: float | None = None  # ETH, for sorting and charts
    valueWei: Wei | None = None  # exact
    valueUsd: float | None = None
    updatedAt: datetime | None = None
    aiConfidenceScore: float | None = None


class Appraisal(BaseModel):
    """The latest AI oracle appraisal (aiOracleData), kept on the asset for its detail; prices in ETH."""

    predictionId: PydanticObjectId
    price: float
    priceWei: Wei
    low: float
    high: float
    confidenceScore: float
    modelVersion: str
    timestamp: datetime


class MarketStatus(BaseModel):
    isListed: bool = False
    listingPrice: float | None = None
    listingPriceWei: Wei | None = None
    listedAt: datetime | None = None
    listedBy: str | None = None


MINT_STATUSES = ("pending", "minted", "confirmed", "failed")


class AssetChain(BaseModel):
    """The asset's token on the platform's AssetToken: its mint, asked for at onboarding and confirmed by
    the chain indexer (pending -> minted -> confirmed, or failed)."""

    contractAddress: str
    mintTx: str | None = None
    block: int | None = None
    status: str = "pending"


class Ownership(BaseModel):
    currentOwner: str | None = None
    ownerSince: datetime | None = None


class Verification(BaseModel):
    isVerified: bool = False
    verifiedBy: str | None = None
    verifiedAt: datetime | None = None
    verificationData: dict[str, Any] = Field(default_factory=dict)


class AssetStats(BaseModel):
    viewCount: int = 0
    favoriteCount: int = 0
    offerCount: int = 0
    viewFlushSeq: int = 0  # the last view-count flush applied (app/assets/views.py)


def fold_name(name: str) -> str:
    """The form names are searched in: case-folded, so a prefix matches whatever the case."""
    return name.casefold()


ASC, DESC = pymongo.ASCENDING, pymongo.DESCENDING
# The list sorts: API name -> document path.
SORT_FIELDS = {
    "createdAt": "createdAt",
    "updatedAt": "updatedAt",
    "price": "currentPrice.value",
    "viewCount": "stats.viewCount",
}


def _sort_index(path: str, name: str, prefix: str | None = None) -> IndexModel:
    keys = [(path, DESC), ("_id", DESC)]
    if prefix:
        keys.insert(0, (prefix, ASC))
    return IndexModel(keys, name=f"{prefix.rsplit('.', 1)[-1] + '_' if prefix else ''}{name}_id")


class Asset(Document):
    tokenId: int
    contractAddress: str
    name: str
    # `name` case-folded, for the `q` prefix search: an index range on it replaces a case-insensitive
    # regex, which no index serves. Derived from `name` whenever a document is built, so every writer
    # (the API, scripts/seed.py) stores it; older documents are filled by `assets.backfill_name_lower`.
    nameLower: str = ""
    assetType: str
    description: str = ""
    metadata: AssetMetadata = Field(default_factory=AssetMetadata)
    media: AssetMedia = Field(default_factory=AssetMedia)
    currentPrice: CurrentPrice = Field(default_factory=CurrentPrice)
    appraisal: Appraisal | None = None
    marketStatus: MarketStatus = Field(default_factory=MarketStatus)
    chain: AssetChain | None = None
    ownership: Ownership = Field(default_factory=Ownership)
    verification: Verification = Field(default_factory=Verification)
    stats: AssetStats = Field(default_factory=AssetStats)
    version: int = 0  # bumped on every write, for optimistic concurrency
    createdAt: datetime = Field(default_factory=utcnow)
    updatedAt: datetime = Field(default_factory=utcnow)
    # Announcements written in the very update that makes the change they announce, then moved to the
    # events outbox (app/assets/announcing.py): a crash in between leaves them here for the sweep.
    pendingEvents: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _derive_name_lower(self) -> Asset:
        self.nameLower = fold_name(self.name)
        return self

    class Settings:
        name = "assets"
        # The seed's single-field indexes on the owner, type, listing flag and price are served by the
        # compound ones below that lead with them; kept as well, they cost every write of an asset
        # (each index is rewritten when a document is) and served no query the others do not.
        retired_indexes = ["currentOwner", "assetType", "isListed", "currentPrice"]
        indexes = [
            IndexModel([("tokenId", pymongo.ASCENDING)], unique=True, name="tokenId_unique"),
            # Keyset pagination: every list sort as (field, _id), and the default and price sorts behind
            # the main filters (type, listings, owner). Each index costs every write that changes its
            # keys, so none holds stats.viewCount behind a filter (a view would rewrite it).
            *(_sort_index(path, name) for name, path in SORT_FIELDS.items()),
            _sort_index("createdAt", "createdAt", "assetType"),
            _sort_index("currentPrice.value", "price", "assetType"),
            _sort_index("createdAt", "createdAt", "marketStatus.isListed"),
            _sort_index("marketStatus.listingPrice", "listingPrice", "marketStatus.isListed"),
            _sort_index("createdAt", "createdAt", "ownership.currentOwner"),
            _sort_index("currentPrice.value", "price", "ownership.currentOwner"),
            IndexModel([("nameLower", ASC)], name="nameLower"),
            # A staged upload is found by its key (completing a multipart upload) within its token.
            IndexModel([("media.files.key", ASC), ("tokenId", ASC)], name="mediaFileKey_tokenId"),
            IndexModel([("pendingEvents._id", ASC)], name="pendingEvents", sparse=True),
        ]


class PriceSource(BaseModel):
    type: str  # "ai-oracle", "user-listing", "sale", ...
    dataSourceName: str | None = None
    modelVersion: str | None = None


class PriceFactor(BaseModel):
    name: str
    weight: float
    impact: float


class AiMetrics(BaseModel):
    confidenceScore: float | None = None
    factors: list[PriceFactor] = Field(default_factory=list)


class PriceHistory(Document):
    assetId: PydanticObjectId | None = None
    tokenId: int
    price: float
    priceWei: Wei | None = None
    priceUsd: float | None = None
    timestamp: datetime
    source: PriceSource
    aiMetrics: AiMetrics | None = None
    blockchain: ChainReference | None = None

    class Settings:
        name = "priceHistory"
        indexes = [
            IndexModel(
                [("tokenId", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="tokenId_timestamp"
            ),
            IndexModel(
                [("assetId", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="assetId_timestamp"
            ),
            # Raw points are paged by (timestamp, _id) within one token.
            IndexModel([("tokenId", ASC), ("timestamp", DESC), ("_id", DESC)], name="tokenId_timestamp_id"),
        ]
