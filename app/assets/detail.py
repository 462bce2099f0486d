"""The detail of an asset per caller: the allow-lists of what each role sees, and the cached public part.

The detail is split in two. The static part (name, description, metadata, verification...) is written
only by the assets service, which bumps `version` on each write: its public view is cached, keyed by
that version. The live part (repository.LIVE_FIELDS) is what other writers change without telling us
(view counts, price from the oracle, ownership and market status from the chain indexer, media from the
pipeline): every view reads it from MongoDB with a projection, so it is always current.

Every field shown is named below: a field stored on the document (`nameLower`, `stats.viewFlushSeq`,
whatever another component adds) never reaches a caller unless it is added here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from bson import Decimal128, ObjectId

from app.lib import cache
from app.lib.schemas import encode_json
from app.lib.security import Principal

DETAIL_CACHE = "asset_detail"
DETAIL_TTL_S = 300
PUBLIC_METADATA = (
    "assetLocation",
    "acquisitionDate",
    "dimensions",
    "materials",
    "creator",
    "creationDate",
    "condition",
    "customAttributes",
)
PUBLIC_PROVENANCE = ("owner", "period")
PUBLIC_CERTIFICATE = ("type", "issuer", "date")
PUBLIC_VERIFICATION = ("isVerified", "verifiedAt")
PRICE_FIELDS = ("value", "valueWei", "valueUsd", "aiConfidenceScore", "updatedAt")
APPRAISAL_FIELDS = (
    "predictionId",
    "price",
    "priceWei",
    "low",
    "high",
    "confidenceScore",
    "modelVersion",
    "timestamp",
)
LISTING_FIELDS = ("isListed", "listingPrice", "listingPriceWei", "listedAt", "listedBy")
OWNERSHIP_FIELDS = ("currentOwner", "ownerSince")
CHAIN_FIELDS = ("contractAddress", "mintTx", "block", "status")
# Admins also see who verified an asset and what the check recorded, and provenance documentation and
# certificate files: references to verification documents (an owner may even PATCH an originals key into
# provenance). They come with the live part (repository.ADMIN_PROJECTION), so they are never cached.
ADMIN_VERIFICATION = ("isVerified", "verifiedBy", "verifiedAt", "verificationData")


def plain(value: Any) -> Any:
    """A raw BSON value as JSON-able data (wei as a decimal string, ids as hex)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if key != "_id"}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, Decimal128):
        return str(int(value.to_decimal()))
    if isinstance(value, Decimal):
        return str(int(value))
    if isinstance(value, ObjectId):
        return str(value)
    return value


def _pick(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    source = value if isinstance(value, dict) else {}
    return {name: plain(source.get(name)) for name in fields}


def _picks(values: Any, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [_pick(value, fields) for value in values or [] if isinstance(value, dict)]


def static_detail(doc: dict[str, Any]) -> bytes:
    """The public view of an asset's static part (cached), tagged with its document id and version."""
    metadata = doc.get("metadata") or {}
    public_metadata = _pick(metadata, PUBLIC_METADATA)
    public_metadata["materials"] = public_metadata["materials"] or []
    public_metadata["customAttributes"] = public_metadata["customAttributes"] or {}
    public_metadata["provenance"] = _picks(metadata.get("provenance"), PUBLIC_PROVENANCE)
    public_metadata["certificates"] = _picks(metadata.get("certificates"), PUBLIC_CERTIFICATE)
    verification = _pick(doc.get("verification"), PUBLIC_VERIFICATION)
    verification["isVerified"] = bool(verification["isVerified"])
    body = {
        "id": str(doc["_id"]),
        "tokenId": doc["tokenId"],
        "contractAddress": doc.get("contractAddress"),
        "name": doc.get("name"),
        "assetType": doc.get("assetType"),
        "description": doc.get("description") or "",
        "metadata": public_metadata,
        "verification": verification,
        "createdAt": doc.get("createdAt"),
        "version": doc.get("version", 0),
    }
    return encode_json(body)


def _admin_view(body: dict[str, Any], doc: dict[str, Any]) -> None:
    """What only admins see, added to the public view."""
    metadata = doc.get("metadata") or {}
    body["verification"] = _pick(doc.get("verification"), ADMIN_VERIFICATION)
    body["verification"]["isVerified"] = bool(body["verification"]["isVerified"])
    body["verification"]["verificationData"] = body["verification"]["verificationData"] or {}
    body["metadata"]["provenance"] = _picks(metadata.get("provenance"), (*PUBLIC_PROVENANCE, "documentation"))
    body["metadata"]["certificates"] = _picks(metadata.get("certificates"), (*PUBLIC_CERTIFICATE, "fileKey"))


def render(
    static: bytes,
    live: dict[str, Any],
    principal: Principal | None,
    *,
    view_count: int,
    media: dict[str, Any],
) -> dict[str, Any]:
    """The detail for this caller (schemas.AssetDetail): the public static view, the live part, the
    views counted so far, the media this caller may see, and what only admins see."""
    body = msgspec.json.decode(static)
    stats = live.get("stats") or {}
    body["currentPrice"] = _pick(live.get("currentPrice"), PRICE_FIELDS)
    body["appraisal"] = _pick(live["appraisal"], APPRAISAL_FIELDS) if live.get("appraisal") else None
    body["marketStatus"] = _pick(live.get("marketStatus"), LISTING_FIELDS)
    body["marketStatus"]["isListed"] = bool(body["marketStatus"]["isListed"])
    body["ownership"] = _pick(live.get("ownership"), OWNERSHIP_FIELDS)
    body["chain"] = _pick(live["chain"], CHAIN_FIELDS) if live.get("chain") else None
    body["updatedAt"] = live.get("updatedAt")
    body["version"] = live.get("version", 0)
    body["stats"] = {
        "viewCount": view_count,
        "favoriteCount": stats.get("favoriteCount", 0),
        "offerCount": stats.get("offerCount", 0),
    }
    body["media"] = media
    if principal is not None and principal.is_admin:
        _admin_view(body, live)
    return body


# ---------------------------------------------------------------- the cache of the static part


def _detail_key(token_id: int) -> str:
    return f"asset:public:{token_id}"  # bodies cached under `asset:{id}` held every field: never read them


def queue_cached(pipe, token_id: int) -> None:
    """Read the cached static part in a pipeline (or MULTI) that the caller executes."""
    pipe.get(cache.PREFIX + _detail_key(token_id))


async def cached(redis, token_id: int) -> bytes | None:
    """The cached static part on its own, or None (a Redis failure is a miss); check it with is_current."""
    return await cache.get(redis, DETAIL_CACHE, _detail_key(token_id))


def is_current(static: bytes, live: dict[str, Any]) -> bool:
    """Whether a cached static part was made from this document at this version (a re-created asset
    has a new id)."""
    try:
        tag = msgspec.json.decode(static, type=_Versioned)
    except msgspec.DecodeError:
        return False
    return (tag.id, tag.version) == (str(live["_id"]), live.get("version", 0))


class _Versioned(msgspec.Struct):
    id: str = ""
    version: int = 0


async def store(redis, token_id: int, static: bytes) -> None:
    await cache.put(redis, _detail_key(token_id), static, DETAIL_TTL_S)


async def invalidate(redis, token_id: int) -> None:
    """Forget the cached static part of this asset; call after any write to it."""
    await cache.drop(redis, _detail_key(token_id))


def hit() -> None:
    cache.hit(DETAIL_CACHE)


def miss() -> None:
    cache.miss(DETAIL_CACHE)
