"""The assets' own queries: `assets`, its projections, pages and aggregations.

Hot reads go straight to PyMongo with projections and come back as raw documents (dicts), which the
service shapes into schemas; Beanie validates what is inserted. Filters are built here only from
values the service has already checked, so nothing a client sends becomes a query operator. Prices
(price_records.py), what the chain decides (chain_records.py) and the media records (media_records.py)
have queries of their own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from app.assets.documents import Asset, fold_name
from app.lib.pagination import Position, Sort, keyset_page
from app.lib.params import MAX_INT64

# API sort name -> (document path, nullable); listings sort price by the asking price.
ASSET_SORTS = {
    "createdAt": ("createdAt", False),
    "updatedAt": ("updatedAt", False),
    "price": ("currentPrice.value", True),
    "viewCount": ("stats.viewCount", False),
}
LISTING_SORTS = {**ASSET_SORTS, "price": ("marketStatus.listingPrice", True)}
LIST_PROJECTION = {
    "tokenId": 1,
    "name": 1,
    "assetType": 1,
    "ownership.currentOwner": 1,
    "verification.isVerified": 1,
    "media.thumbnailUrl": 1,
    "currentPrice": 1,
    "marketStatus": 1,
    "stats.viewCount": 1,
    "createdAt": 1,
    "updatedAt": 1,
}
# The live part of a detail (app/assets/detail.py): what other writers change without bumping `version`.
LIVE_FIELDS = (
    "stats",
    "version",
    "media",
    "currentPrice",
    "appraisal",
    "marketStatus",
    "ownership",
    "chain",
    "updatedAt",
)
LIVE_PROJECTION = dict.fromkeys(LIVE_FIELDS, 1)
# An admin's read takes the admin-only fields with the live part, so they are never cached.
ADMIN_PROJECTION = {
    **LIVE_PROJECTION,
    "verification": 1,
    "metadata.provenance": 1,
    "metadata.certificates": 1,
}


def assets_collection():
    return Asset.get_pymongo_collection()


# ---------------------------------------------------------------- assets


async def find(token_id: int, projection: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The raw asset with this tokenId (the whole document, or `projection`), or None."""
    return await assets_collection().find_one({"tokenId": token_id}, projection)


async def insert(asset: Asset) -> bool:
    """Insert a new asset; False when its tokenId is taken."""
    try:
        await asset.insert()
    except DuplicateKeyError:
        return False
    return True


async def count_view(token_id: int) -> dict[str, Any] | None:
    """Count one view with a MongoDB `$inc` (the fallback without Redis); the document after it."""
    return await assets_collection().find_one_and_update(
        {"tokenId": token_id}, {"$inc": {"stats.viewCount": 1}}, return_document=ReturnDocument.AFTER
    )


async def set_verification(
    token_id: int, verification: dict[str, Any], now: datetime
) -> dict[str, Any] | None:
    """Replace the verification, bumping `version`; the previous verification, or None without an asset."""
    return await assets_collection().find_one_and_update(
        {"tokenId": token_id},
        {"$set": {"verification": verification, "updatedAt": now}, "$inc": {"version": 1}},
        projection={"verification": 1},
        return_document=ReturnDocument.BEFORE,
    )


async def set_if_version(
    token_id: int, version: int, changes: dict[str, Any], now: datetime, events: list[dict[str, Any]] = ()
) -> bool:
    """`$set` these paths, bumping `version`, only if the stored version is `version` (0: never written);
    `events` announcing the change are kept in the same update (`pendingEvents`)."""
    if not 0 <= version <= MAX_INT64:  # no stored version is one BSON cannot even hold
        return False
    update: dict[str, Any] = {"$set": {**changes, "updatedAt": now}, "$inc": {"version": 1}}
    if events:
        update["$push"] = {"pendingEvents": {"$each": list(events)}}
    result = await assets_collection().update_one(
        {"tokenId": token_id, "version": version}
        if version
        else {"tokenId": token_id, "version": {"$in": [0, None]}},
        update,
    )
    return result.matched_count > 0


async def with_pending_events(
    token_id: int | None, before: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Assets holding announcements not yet in the outbox: this one, or those last written before `before`."""
    query: dict[str, Any] = {"pendingEvents._id": {"$exists": True}}
    if token_id is not None:
        query["tokenId"] = token_id
    if before is not None:
        query["updatedAt"] = {"$lt": before}
    projection = {"tokenId": 1, "pendingEvents": 1}
    return await assets_collection().find(query, projection, limit=limit).to_list()


async def drop_pending_events(token_id: int, keys: list[str]) -> None:
    await assets_collection().update_one(
        {"tokenId": token_id}, {"$pull": {"pendingEvents": {"_id": {"$in": keys}}}}
    )


async def media_announced(token_id: int, digest: str, announcements: int) -> None:
    """Record the `announcements`-th media state announced, unless another run recorded it already."""
    await assets_collection().update_one(
        {
            "tokenId": token_id,
            # none recorded yet: the field is missing on assets older than it
            "media.announcements": announcements if announcements else {"$in": [0, None]},
        },
        {"$set": {"media.announced": digest, "media.announcements": announcements + 1}},
    )


def asset_query(
    *,
    asset_type: str | None = None,
    owner: str | None = None,
    is_listed: bool | None = None,
    is_verified: bool | None = None,
    price: dict[str, float] | None = None,
    name_prefix: str | None = None,
    listings: bool = False,
) -> dict[str, Any]:
    """The filter for checked values (None: no condition); `listings`: active listings only, `price`
    bounding the asking price."""
    query: dict[str, Any] = {}
    if asset_type is not None:
        query["assetType"] = asset_type
    if owner is not None:
        query["ownership.currentOwner"] = owner
    if is_listed is not None:
        query["marketStatus.isListed"] = is_listed
    if is_verified is not None:
        query["verification.isVerified"] = is_verified
    if price:
        query["marketStatus.listingPrice" if listings else "currentPrice.value"] = price
    if name_prefix is not None:
        query["nameLower"] = prefix_range(fold_name(name_prefix))
    if listings:
        query["marketStatus.isListed"] = True
    return query


def prefix_range(prefix: str) -> dict[str, str]:
    """The strings starting with `prefix`, as index bounds: `[prefix, next string of its length)`.

    What MongoDB derives from an anchored case-sensitive regex, written out: SecantusDB's planner only
    bounds an index scan by range operators, never by `$regex`. Nothing in it is a pattern, so no escaping
    is needed and nothing the client types can act as regex syntax.
    """
    head = prefix
    while head:
        code = ord(head[-1]) + 1
        if code == 0xD800:  # surrogates are not characters (BSON cannot hold them): skip to U+E000
            code = 0xE000
        if code <= 0x10FFFF:
            return {"$gte": prefix, "$lt": head[:-1] + chr(code)}
        head = head[:-1]
    return {"$gte": prefix}


async def list_page(
    query: dict[str, Any], order: Sort, *, limit: int, after: Position | None, max_time_ms: int
) -> tuple[list[dict[str, Any]], Position | None]:
    """One keyset page of list items (LIST_PROJECTION) and the position of its last one."""
    return await keyset_page(
        assets_collection(),
        query,
        order,
        limit=limit,
        after=after,
        projection=LIST_PROJECTION,
        max_time_ms=max_time_ms,
    )


async def applied_view_seqs(token_ids: list[int]) -> dict[int, int]:
    """Each token's last view flush applied in MongoDB (`stats.viewFlushSeq`)."""
    return {
        doc["tokenId"]: int((doc.get("stats") or {}).get("viewFlushSeq") or 0)
        async for doc in assets_collection().find(
            {"tokenId": {"$in": token_ids}}, {"tokenId": 1, "stats.viewFlushSeq": 1}
        )
    }


async def add_views(entries: dict[int, dict[int, int]]) -> int:
    """Add each (token, flush seq) -> views entry to `stats.viewCount` unless MongoDB has applied it."""
    operations = [
        UpdateOne(
            {"tokenId": token_id, "stats.viewFlushSeq": {"$not": {"$gte": seq}}},
            {"$inc": {"stats.viewCount": views}, "$set": {"stats.viewFlushSeq": seq}},
        )
        for token_id, by_seq in entries.items()
        for seq, views in sorted(by_seq.items())  # ascending: a later seq would shadow an earlier one
    ]
    if not operations:
        return 0
    result = await assets_collection().bulk_write(operations, ordered=True)
    return result.modified_count


async def backfill_name_lower(batch: int = 500) -> int:
    """Give `nameLower` to assets written before it existed (idempotent); returns how many changed."""
    collection = assets_collection()
    changed = 0
    while True:
        docs = await collection.find({"nameLower": {"$exists": False}}, {"name": 1}, limit=batch).to_list()
        if not docs:
            return changed
        ops = [
            UpdateOne({"_id": d["_id"]}, {"$set": {"nameLower": fold_name(d.get("name") or "")}})
            for d in docs
        ]
        changed += (await collection.bulk_write(ops, ordered=False)).modified_count


async def catalog_figures(max_time_ms: int) -> dict[str, Any]:
    """Counts, listings and prices per asset type, and the number of distinct owners, in one aggregation."""
    listed = "$marketStatus.isListed"
    pipeline = [
        {
            "$facet": {
                "byType": [
                    {
                        "$group": {
                            "_id": "$assetType",
                            "count": {"$sum": 1},
                            "listed": {"$sum": {"$cond": [listed, 1, 0]}},
                            "floorPrice": {"$min": {"$cond": [listed, "$marketStatus.listingPrice", None]}},
                            "floorPriceWei": {
                                "$min": {"$cond": [listed, "$marketStatus.listingPriceWei", None]}
                            },
                            "meanPrice": {"$avg": "$currentPrice.value"},
                            "medianPrice": {
                                "$median": {"input": "$currentPrice.value", "method": "approximate"}
                            },
                        }
                    },
                    {"$sort": {"_id": 1}},
                ],
                "owners": [
                    {"$match": {"ownership.currentOwner": {"$type": "string"}}},
                    {"$group": {"_id": "$ownership.currentOwner"}},
                    {"$count": "owners"},
                ],
            }
        }
    ]
    rows = await (await assets_collection().aggregate(pipeline, maxTimeMS=max_time_ms)).to_list()
    return rows[0] if rows else {"byType": [], "owners": []}
