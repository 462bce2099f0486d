"""Request and response bodies of the asset API (camelCase, as the seed plan names the fields).

Field names are the stored documents' own (the seed plan's camelCase), so request bodies map onto
document paths one to one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from app.assets.documents import MINT_STATUSES
from app.lib.params import ADDRESS, MAX_INT64
from app.lib.schemas import RequestBody, Schema, Timestamp, documented

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
MAX_NAME_CHARS, MAX_DESCRIPTION_CHARS = 200, 10_000
# Free-form attributes are stored as given: a key is 1 to 100 characters, with no '.', no NUL, and no
# leading '$', at every depth, and objects and arrays nest 5 deep at most (app/assets/metadata.py).
ATTRIBUTE_KEY = {"pattern": r"^(?!\$)[^.\u0000]{1,100}$"}
MAX_ATTRIBUTE_DEPTH = 5


def _attribute_value(depth: int) -> dict[str, Any]:
    """Any JSON value; where it is an object or an array (the keywords below apply to those only), its
    keys and items follow the same rules one level deeper, and at the deepest level it is empty."""
    if depth == 0:
        return {"maxProperties": 0, "maxItems": 0}
    inner = _attribute_value(depth - 1)
    return {"propertyNames": ATTRIBUTE_KEY, "additionalProperties": inner, "items": inner}


Attributes = Annotated[
    dict[str, Any],
    documented(propertyNames=ATTRIBUTE_KEY, additionalProperties=_attribute_value(MAX_ATTRIBUTE_DEPTH - 1)),
]


class AssetQuery(msgspec.Struct, kw_only=True, frozen=True):
    """What a client asked of the catalog, as sent: filters, a sort and a page (the catalog checks each)."""

    asset_type: str | None = None
    owner: str | None = None
    is_listed: bool | None = None
    is_verified: bool | None = None
    min_price: float | None = None
    max_price: float | None = None
    q: str | None = None
    sort: str | None = None
    limit: int | None = None
    cursor: str | None = None


# Omitted from a body, rather than null, where the caller may not see the field (admins-only, say).
Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


# ---------------------------------------------------------------- requests


class ProvenanceIn(RequestBody):
    owner: str
    period: str | None = None
    documentation: str | None = None


class CertificateIn(RequestBody):
    type: str
    issuer: str
    date: Timestamp | None = None
    fileKey: str | None = None


class MetadataChanges(RequestBody):
    """Metadata fields, each optional: in a patch, a field left out stays, and null clears it."""

    assetLocation: str | Unset | None = UNSET
    acquisitionDate: Timestamp | Unset | None = UNSET
    dimensions: str | Unset | None = UNSET
    materials: list[str] | Unset | None = UNSET
    creator: str | Unset | None = UNSET
    creationDate: Timestamp | Unset | None = UNSET
    condition: str | Unset | None = UNSET
    provenance: list[ProvenanceIn] | Unset | None = UNSET
    certificates: list[CertificateIn] | Unset | None = UNSET


class MetadataIn(MetadataChanges):
    """The off-chain metadata of a new asset; every field optional."""

    customAttributes: Attributes | None = None


# What a metadata patch may change (customAttributes is patched on its own, as a merge patch).
EDITABLE_METADATA = list(MetadataChanges.__struct_fields__)


class AssetCreate(RequestBody):
    """Onboard an asset (an ERC-721 token) into the marketplace."""

    tokenId: Annotated[int, documented(minimum=0, maximum=MAX_INT64)]
    name: Annotated[str, documented(minLength=1, maxLength=MAX_NAME_CHARS, pattern=r"\S")]
    assetType: Annotated[str, documented(enum=list(ASSET_TYPES))]
    # Unset: the platform's AssetToken, which then mints the token to its owner.
    contractAddress: Annotated[str, documented(pattern=ADDRESS)] | None = None
    description: Annotated[str, documented(maxLength=MAX_DESCRIPTION_CHARS)] = ""
    metadata: MetadataIn | None = None
    customAttributes: Attributes | None = None
    owner: Annotated[str, documented(pattern=ADDRESS)] | None = None


class VerifyRequest(RequestBody):
    """Mark an asset verified (or withdraw verification) with what the check found."""

    isVerified: bool = True
    verificationData: Attributes | None = None


class MetadataPatch(RequestBody):
    """Change metadata fields and custom attributes; `version` is the one the client last read.

    Fields given in `metadata` replace the stored ones (null clears); `customAttributes` is a JSON
    merge patch (a null value removes the key).
    """

    version: int
    metadata: MetadataChanges | None = None
    customAttributes: Attributes | None = None


# ---------------------------------------------------------------- lists


class Price(Schema):
    value: float | None = None
    valueWei: str | None = None
    valueUsd: float | None = None
    aiConfidenceScore: float | None = None
    updatedAt: datetime | None = None


class AppraisalView(Schema):
    """The latest AI oracle appraisal: its prediction (`GET /api/oracle/predictions/{predictionId}`), the
    price and its 90% interval in ETH (the exact wei beside the price), confidence 0-100."""

    predictionId: str
    price: float
    priceWei: str
    low: float
    high: float
    confidenceScore: float
    modelVersion: str
    timestamp: datetime


class ChainView(Schema):
    """The asset's token on the platform's AssetToken, and its mint: `pending` (asked for), `minted`
    (in a block), `confirmed` (final), or `failed`."""

    contractAddress: str
    mintTx: str | None
    block: int | None
    status: Annotated[str, documented(enum=list(MINT_STATUSES))]


class Listing(Schema):
    isListed: bool = False
    listingPrice: float | None = None
    listingPriceWei: str | None = None
    listedAt: datetime | None = None
    listedBy: str | None = None


class AssetListItem(Schema):
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


class AssetPage(Schema):
    items: list[AssetListItem]
    nextCursor: str | None
    limit: int


# ---------------------------------------------------------------- the detail
#
# The shape of what app/assets/detail.py renders (the handlers send it as built there, the cached static
# part included); tests/assets/test_schemas.py checks every role's detail against it.


class ProvenanceView(Schema):
    owner: str | None
    period: str | None
    documentation: str | Unset | None = UNSET  # admins only


class CertificateView(Schema):
    type: str | None
    issuer: str | None
    date: datetime | None
    fileKey: str | Unset | None = UNSET  # admins only


class MetadataView(Schema):
    assetLocation: str | None
    acquisitionDate: datetime | None
    dimensions: str | None
    materials: list[str]
    creator: str | None
    creationDate: datetime | None
    condition: str | None
    customAttributes: dict[str, Any]
    provenance: list[ProvenanceView]
    certificates: list[CertificateView]


class VerificationView(Schema, kw_only=True):
    isVerified: bool
    verifiedBy: str | Unset | None = UNSET  # admins only
    verifiedAt: datetime | None
    verificationData: dict[str, Any] | Unset = UNSET  # admins only


class OwnershipView(Schema):
    currentOwner: str | None
    ownerSince: datetime | None


class StatsView(Schema):
    viewCount: int = 0  # every view so far, the ones not yet flushed included
    favoriteCount: int = 0
    offerCount: int = 0


class ImageView(Schema):
    """A processed image: its public renditions, a presigned high-resolution GET for signed-in callers,
    and for admins the original."""

    label: str | None
    width: int | None
    height: int | None
    previewUrl: str | Unset = UNSET
    watermarkedUrl: str | Unset = UNSET
    highResUrl: str | Unset = UNSET
    originalKey: str | Unset = UNSET  # admins only, as are the fields below
    originalUrl: str | Unset = UNSET
    sha256: str | Unset | None = UNSET
    contentType: str | Unset | None = UNSET


class FileView(Schema):
    """A document, video or model, as a presigned GET that expires after a few minutes."""

    category: str | None
    label: str | None
    contentType: str | None
    size: int | None
    sha256: str | None
    url: str
    verification: bool | Unset = UNSET  # documents: whether it is a verification document (admins)


class UploadView(Schema):
    """An upload still staged, rejected, or not yet processed (its owner and admins)."""

    kind: str | None
    label: str | None
    category: str | None
    status: str
    error: str | None
    contentType: str | None
    size: int | None
    key: str | Unset = UNSET  # admins only


class MediaView(Schema):
    """The media this caller may see (seed plan 3.2.3)."""

    thumbnailUrl: str | None
    thumbnails: dict[str, dict[str, str]]  # size (sm, md, lg) -> format (jpeg, webp) -> public URL
    images: list[ImageView]
    documents: list[FileView] | Unset = UNSET  # signed-in callers
    videos: list[FileView] | Unset = UNSET
    models: list[FileView] | Unset = UNSET
    uploads: list[UploadView] | Unset = UNSET  # the owner and admins


class AssetDetail(Schema):
    """An asset in full, as this caller may see it."""

    id: str
    tokenId: int
    contractAddress: str | None
    name: str | None
    assetType: str | None
    description: str
    metadata: MetadataView
    verification: VerificationView
    createdAt: datetime | None
    version: int
    currentPrice: Price
    appraisal: AppraisalView | None
    marketStatus: Listing
    ownership: OwnershipView
    chain: ChainView | None
    updatedAt: datetime | None
    stats: StatsView
    media: MediaView


# ---------------------------------------------------------------- for other domains


class TypeFigures(Schema):
    """Counts and prices of one asset type (floor: the lowest asking price of its listings)."""

    assetType: str
    count: int
    listedCount: int
    floorPrice: float | None
    floorPriceWei: str | None
    meanPrice: float | None
    medianPrice: float | None


class CatalogFigures(Schema):
    """What the catalog adds to the market stats: figures per type (by name), and distinct owners."""

    byType: list[TypeFigures]
    uniqueOwners: int
