"""Request and response models of the asset API (camelCase, as the seed plan names the fields)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

ASSET_TYPES = (
    "Art",
    "Collectible",
    "Real Estate",
    "Jewelry",
    "Watch",
    "Wine",
    "Vehicle",
    "Memorabilia",
    "Luxury Goods",
)
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
ADDRESS_RE = re.compile(ADDRESS)
PRICE_SOURCES = ("ai-oracle", "user-listing", "sale", "appraisal", "offer")
INTERVALS = ("raw", "1h", "1d", "1w")


class ProvenanceIn(msgspec.Struct, forbid_unknown_fields=True):
    owner: str
    period: str | None = None
    documentation: str | None = None


class CertificateIn(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    issuer: str
    date: datetime | None = None
    fileKey: str | None = None


class MetadataIn(msgspec.Struct, forbid_unknown_fields=True):
    """The off-chain metadata of an asset; every field optional."""

    assetLocation: str | None = None
    acquisitionDate: datetime | None = None
    dimensions: str | None = None
    materials: list[str] | None = None
    creator: str | None = None
    creationDate: datetime | None = None
    condition: str | None = None
    provenance: list[ProvenanceIn] | None = None
    certificates: list[CertificateIn] | None = None
    customAttributes: dict[str, Any] | None = None


class AssetCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Onboard an asset (an ERC-721 token) into the marketplace."""

    tokenId: int
    contractAddress: str
    name: str
    assetType: str
    description: str = ""
    metadata: MetadataIn | None = None
    customAttributes: dict[str, Any] | None = None
    owner: str | None = None


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Mark an asset verified (or withdraw verification) with what the check found."""

    isVerified: bool = True
    verificationData: dict[str, Any] | None = None


class MetadataPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Change metadata fields and custom attributes; `version` is the one the client last read.

    Fields given in `metadata` replace the stored ones (null clears); `customAttributes` is a JSON
    merge patch (a null value removes the key).
    """

    version: int
    metadata: dict[str, Any] | None = None
    customAttributes: dict[str, Any] | None = None


class Price(msgspec.Struct):
    value: float | None = None
    valueWei: str | None = None
    valueUsd: float | None = None
    aiConfidenceScore: float | None = None
    updatedAt: datetime | None = None


class Listing(msgspec.Struct):
    isListed: bool = False
    listingPrice: float | None = None
    listingPriceWei: str | None = None
    listedAt: datetime | None = None
    listedBy: str | None = None


class AssetListItem(msgspec.Struct):
    """The compact form of an asset used by lists."""

    tokenId: int
    name: str
    assetType: str
    owner: str | None
    isVerified: bool
    thumbnailUrl: str | None
    currentPrice: Price
    marketStatus: Listing
    viewCount: int
    createdAt: datetime
    updatedAt: datetime


class AssetPage(msgspec.Struct):
    items: list[AssetListItem]
    nextCursor: str | None
    limit: int


class PricePoint(msgspec.Struct):
    timestamp: datetime
    price: float
    priceWei: str | None
    priceUsd: float | None
    source: str
    dataSourceName: str | None
    modelVersion: str | None
    confidenceScore: float | None
    transactionHash: str | None


class PriceBucket(msgspec.Struct):
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    mean: float
    count: int
    meanConfidence: float | None


class PriceHistoryPage(msgspec.Struct):
    tokenId: int
    interval: str
    points: list[PricePoint] | None = None
    buckets: list[PriceBucket] | None = None
    nextCursor: str | None = None
