"""Assets: onboarding, lists, details (cached), metadata updates and price history.

Hot reads go straight to PyMongo with projections and are shaped into msgspec structs or plain dicts;
Beanie validates what is written. Every write bumps `version` and `updatedAt` and then invalidates the
caches, after it has committed.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import msgspec
import structlog
from bson import Decimal128, ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError
from redis.exceptions import RedisError

from app.assets import schemas
from app.assets.documents import Asset, AssetMedia, AssetMetadata, Ownership, PriceHistory, fold_name
from app.audit import service as audit_service
from app.config import Settings
from app.lib import cache
from app.lib.context import SYSTEM, RequestContext
from app.lib.errors import BadRequest, Conflict, NotFound, require_one_of
from app.lib.money import wei_string
from app.lib.pagination import Sort, decode_cursor, encode_cursor, keyset_page
from app.lib.params import bounded_query, parse_address, parse_limit, parse_sort
from app.lib.security import Principal, ensure_owner_or_admin, ensure_permission
from app.lib.timeutil import client_time, utcnow
from app.market import service as market_service
from app.media import access

log = structlog.get_logger(__name__)

MAX_TOKEN_ID = 2**63 - 1
MAX_QUERY_CHARS = 100
DETAIL_CACHE = "asset_detail"
DETAIL_TTL_S = 300
# What a caller needs, besides owning the asset, to change its metadata (a signed-in user has it).
METADATA_PERMISSION = "assets:metadata"
METADATA_FIELDS = frozenset(field.name for field in msgspec.structs.fields(schemas.MetadataIn))
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
MAX_ATTRIBUTE_DEPTH = 5
MAX_ATTRIBUTE_BYTES = 16_384


def assets_collection():
    return Asset.get_pymongo_collection()


def history_collection():
    return PriceHistory.get_pymongo_collection()


def known_token(token_id: int) -> int:
    """Token ids outside MongoDB's int64 cannot be stored, so no asset has one: 404 like any unknown id."""
    if not 0 <= token_id <= MAX_TOKEN_ID:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return token_id


def check_attributes(value: Any, path: str = "customAttributes", depth: int = 0) -> None:
    """Free-form attributes are stored as given, so no key may look like an operator or a path."""
    if depth > MAX_ATTRIBUTE_DEPTH:
        raise BadRequest(f"{path} nests too deeply", code="invalid_attributes")
    if isinstance(value, dict):
        for key, item in value.items():
            if not key or key.startswith("$") or "." in key or "\x00" in key or len(key) > 100:
                raise BadRequest(
                    f"{path} has a key that is not allowed: {key!r}",
                    code="operator_not_allowed" if key.startswith("$") else "invalid_attributes",
                )
            check_attributes(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_attributes(item, f"{path}[{index}]", depth + 1)


def _check_attribute_size(value: dict[str, Any]) -> None:
    if len(msgspec.json.encode(value)) > MAX_ATTRIBUTE_BYTES:
        raise BadRequest("customAttributes is too large", code="invalid_attributes")


# ---------------------------------------------------------------- rendering


def list_item(doc: dict[str, Any], storage) -> schemas.AssetListItem:
    price = doc.get("currentPrice") or {}
    market = doc.get("marketStatus") or {}
    return schemas.AssetListItem(
        tokenId=doc["tokenId"],
        name=doc["name"],
        assetType=doc["assetType"],
        owner=(doc.get("ownership") or {}).get("currentOwner"),
        isVerified=bool((doc.get("verification") or {}).get("isVerified")),
        thumbnailUrl=_thumbnail(storage, (doc.get("media") or {}).get("thumbnailUrl")),
        currentPrice=schemas.Price(
            value=price.get("value"),
            valueWei=wei_string(price.get("valueWei")),
            valueUsd=price.get("valueUsd"),
            aiConfidenceScore=price.get("aiConfidenceScore"),
            updatedAt=price.get("updatedAt"),
        ),
        marketStatus=schemas.Listing(
            isListed=bool(market.get("isListed")),
            listingPrice=market.get("listingPrice"),
            listingPriceWei=wei_string(market.get("listingPriceWei")),
            listedAt=market.get("listedAt"),
            listedBy=market.get("listedBy"),
        ),
        viewCount=(doc.get("stats") or {}).get("viewCount", 0),
        createdAt=doc["createdAt"],
        updatedAt=doc["updatedAt"],
    )


def _thumbnail(storage, key: str | None) -> str | None:
    if not key:
        return None
    return key if key.startswith(("http://", "https://")) else storage.public_url(key)


def _plain(value: Any) -> Any:
    """A raw BSON value as JSON-able data (wei as a decimal string, ids as hex)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if key != "_id"}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal128):
        return str(int(value.to_decimal()))
    if isinstance(value, Decimal):
        return str(int(value))
    if isinstance(value, ObjectId):
        return str(value)
    return value


# The detail is split in two. The static part (name, description, metadata, verification...) is written
# only by this module, which bumps `version` on each write: its public view is cached, keyed by that
# version. The live part is what other writers change without telling us (view counts, price from the
# oracle, ownership and market status from the chain indexer, media from the pipeline): every view reads
# it from MongoDB with a projection, so it is always current.
#
# Every field shown is named below: a field stored on the document (`nameLower`, `stats.viewFlushSeq`,
# whatever another component adds) never reaches a caller unless it is added here.
LIVE_FIELDS = ("stats", "version", "media", "currentPrice", "marketStatus", "ownership", "updatedAt")
LIVE_PROJECTION = dict.fromkeys(LIVE_FIELDS, 1)
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
LISTING_FIELDS = ("isListed", "listingPrice", "listingPriceWei", "listedAt", "listedBy")
OWNERSHIP_FIELDS = ("currentOwner", "ownerSince")
# Admins also see who verified an asset and what the check recorded, and provenance documentation and
# certificate files: references to verification documents (an owner may even PATCH an originals key into
# provenance). An admin's read takes them with the live part (ADMIN_PROJECTION), so they are never cached.
ADMIN_VERIFICATION = ("isVerified", "verifiedBy", "verifiedAt", "verificationData")
ADMIN_PROJECTION = {
    **LIVE_PROJECTION,
    "verification": 1,
    "metadata.provenance": 1,
    "metadata.certificates": 1,
}


def _pick(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    source = value if isinstance(value, dict) else {}
    return {name: _plain(source.get(name)) for name in fields}


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
    return msgspec.json.encode(body)


def _admin_view(body: dict[str, Any], doc: dict[str, Any]) -> None:
    """What only admins see, added to the public view."""
    metadata = doc.get("metadata") or {}
    body["verification"] = _pick(doc.get("verification"), ADMIN_VERIFICATION)
    body["verification"]["isVerified"] = bool(body["verification"]["isVerified"])
    body["verification"]["verificationData"] = body["verification"]["verificationData"] or {}
    body["metadata"]["provenance"] = _picks(metadata.get("provenance"), (*PUBLIC_PROVENANCE, "documentation"))
    body["metadata"]["certificates"] = _picks(metadata.get("certificates"), (*PUBLIC_CERTIFICATE, "fileKey"))


async def render_detail(
    static: bytes,
    live: dict[str, Any],
    principal: Principal | None,
    storage,
    settings: Settings,
    views: ViewCounters | None = None,
) -> dict[str, Any]:
    """The detail for this caller: the public static view, the live part, media, admin-only details."""
    body = msgspec.json.decode(static)
    stats = live.get("stats") or {}
    body["currentPrice"] = _pick(live.get("currentPrice"), PRICE_FIELDS)
    body["marketStatus"] = _pick(live.get("marketStatus"), LISTING_FIELDS)
    body["marketStatus"]["isListed"] = bool(body["marketStatus"]["isListed"])
    body["ownership"] = _pick(live.get("ownership"), OWNERSHIP_FIELDS)
    body["updatedAt"] = live.get("updatedAt")
    body["version"] = live.get("version", 0)
    body["stats"] = {
        "viewCount": visible_views(stats, views),
        "favoriteCount": stats.get("favoriteCount", 0),
        "offerCount": stats.get("offerCount", 0),
    }
    view_of = SimpleNamespace(
        media=AssetMedia.model_validate(live.get("media") or {}),
        ownership=Ownership.model_validate(live.get("ownership") or {}),
    )
    body["media"] = await access.media_view(view_of, principal, storage, settings)
    if principal is not None and principal.is_admin:
        _admin_view(body, live)
    return body


# ---------------------------------------------------------------- reads


def asset_filter(
    *,
    asset_type: str | None = None,
    owner: str | None = None,
    is_listed: bool | None = None,
    is_verified: bool | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
    q: str | None = None,
    price_path: str = "currentPrice.value",
) -> dict[str, Any]:
    """A MongoDB filter built only from typed, checked values (nothing a client sends is a query)."""
    query: dict[str, Any] = {}
    if asset_type is not None:
        query["assetType"] = require_one_of(
            asset_type, schemas.ASSET_TYPES, field="assetType", code="invalid_asset_type"
        )
    if owner is not None:
        query["ownership.currentOwner"] = parse_address(owner, "owner")
    if is_listed is not None:
        query["marketStatus.isListed"] = is_listed
    if is_verified is not None:
        query["verification.isVerified"] = is_verified
    price: dict[str, float] = {}
    for op, bound, name in (("$gte", min_price, "minPrice"), ("$lte", max_price, "maxPrice")):
        if bound is not None:
            if bound != bound or bound < 0 or bound in (float("inf"), float("-inf")):
                raise BadRequest(f"{name} must be a non-negative number", code="invalid_price")
            price[op] = float(bound)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise BadRequest("minPrice is above maxPrice", code="invalid_price")
    if price:
        query[price_path] = price
    if q is not None:
        if not q.strip() or len(q) > MAX_QUERY_CHARS:
            raise BadRequest(f"q must be 1 to {MAX_QUERY_CHARS} characters", code="invalid_query")
        query["nameLower"] = prefix_range(fold_name(q.strip()))
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


async def list_assets(
    clients,
    settings: Settings,
    *,
    query: dict[str, Any],
    sort: str | None,
    limit: int | None,
    cursor: str | None,
    listings: bool = False,
) -> schemas.AssetPage:
    """One page of assets matching `query`, in a fixed order, with an opaque cursor to the next."""
    sort_name, order = parse_sort(sort, LISTING_SORTS if listings else ASSET_SORTS)
    size = parse_limit(limit)
    scope = f"{'listings' if listings else 'assets'}:{sort_name}"
    secret = settings.auth.jwt_secret.get_secret_value()
    after = decode_cursor(secret, scope, cursor) if cursor is not None else None
    if listings:
        query = {**query, "marketStatus.isListed": True}
    async with bounded_query():
        docs, last = await keyset_page(
            assets_collection(),
            query,
            order,
            limit=size,
            after=after,
            projection=LIST_PROJECTION,
            max_time_ms=settings.mongodb.max_time_ms,
        )
    return schemas.AssetPage(
        items=[list_item(doc, clients.storage) for doc in docs],
        nextCursor=encode_cursor(secret, scope, last) if last else None,
        limit=size,
    )


def _detail_key(token_id: int) -> str:
    return f"asset:public:{token_id}"  # bodies cached under `asset:{id}` held every field: never read them


async def asset_detail(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """Full details of one asset, counting the view: one Redis and one MongoDB round trip on a cache hit."""
    key = _detail_key(known_token(token_id))
    redis = clients.redis
    try:
        pipe = redis.pipeline(transaction=True)
        pipe.get(cache.PREFIX + key)
        _queue_views(pipe, token_id, count=True)
        cached, *replies = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("assets.detail.redis_failed", token_id=token_id, error=str(exc))
        return await _detail_counted_in_mongo(clients, settings, token_id, principal)
    views = _views(replies, counted=True)
    collection = assets_collection()
    async with bounded_query():
        projection = ADMIN_PROJECTION if principal is not None and principal.is_admin else LIVE_PROJECTION
        live = await collection.find_one({"tokenId": token_id}, projection if cached is not None else None)
        if live is None:
            await _unview(redis, token_id, drop_cache=cached is not None)
            raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
        if _applied_seq(live) > views.top:
            # A flush of this token ran between the two reads: take both again, Redis first.
            views = await _view_snapshot_or_none(redis, token_id) or views
            again = await collection.find_one({"tokenId": token_id}, {"stats": 1})
            if again is not None:
                live["stats"] = again.get("stats")
        stats = live.get("stats") or {}
        if cached is not None and _cached_version(cached) == (str(live["_id"]), live.get("version", 0)):
            cache.hit(DETAIL_CACHE)
            return await render_detail(cached, live, principal, clients.storage, settings, views)
        cache.miss(DETAIL_CACHE)
        doc = live if cached is None else await collection.find_one({"tokenId": token_id})
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    doc["stats"] = stats  # the stats the view counters were matched against
    static = static_detail(doc)
    await cache.put(redis, key, static, DETAIL_TTL_S)
    return await render_detail(static, doc, principal, clients.storage, settings, views)


async def _detail_counted_in_mongo(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """Without Redis (no cache, no counters), a view is counted by a MongoDB `$inc` as a fallback."""
    cache.miss(DETAIL_CACHE)
    async with bounded_query():
        doc = await assets_collection().find_one_and_update(
            {"tokenId": token_id}, {"$inc": {"stats.viewCount": 1}}, return_document=ReturnDocument.AFTER
        )
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return await render_detail(static_detail(doc), doc, principal, clients.storage, settings)


def _cached_version(static: bytes) -> tuple[str, int] | None:
    """Which document and version a cached body was made from (a re-created asset has a new id)."""
    try:
        tag = msgspec.json.decode(static, type=_Versioned)
    except msgspec.DecodeError:
        return None
    return tag.id, tag.version


class _Versioned(msgspec.Struct):
    id: str = ""
    version: int = 0


async def invalidate(redis, token_id: int) -> None:
    """Forget the cached detail of this asset; call after any asset write."""
    await cache.drop(redis, _detail_key(token_id))


async def owner_of(token_id: int) -> str | None:
    """The wallet that owns the asset (404 when there is none): what the owner-or-admin guard checks."""
    raw = await get_raw(token_id, {"ownership.currentOwner": 1})
    return (raw.get("ownership") or {}).get("currentOwner")


async def get_raw(token_id: int, projection: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = await assets_collection().find_one({"tokenId": known_token(token_id)}, projection)
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return doc


# ---------------------------------------------------------------- views
#
# A view writes nothing to MongoDB. It increments a pending counter in Redis (and marks the token dirty)
# in the same MULTI as the detail's cache read; the `assets.flush_views` job (every 15 s) moves pending
# counts into `stats.viewCount`. A reader sees stored + pending + in flight, so every view shows at
# once. List items and the viewCount sort use the stored value: they lag by at most one flush interval.
#
# Exactly once: a flush moves a token's pending count, in one Lua step, into an in-flight hash entry
# under a new per-token sequence number; MongoDB applies an entry only if `stats.viewFlushSeq` is below
# its number (and records it), entries are applied in ascending order, and an entry is deleted only
# after that. A flush that crashes leaves its entries for the next one, which re-applies them harmlessly;
# two flushes at once apply each entry once. Readers add only the in-flight entries MongoDB has not
# applied (number above `viewFlushSeq`), so the visible count neither dips nor counts twice.

VIEWS_DIRTY = "views:dirty"
FLUSH_BATCH = 500

# KEYS: pending, in-flight hash, sequence; ARGV: the token's viewFlushSeq in MongoDB. Returns the
# in-flight entries (seq, count, ...), including the one just made, if any.
MOVE_VIEWS_LUA = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then
  local top = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[1]))
  for _, seq in ipairs(redis.call('HKEYS', KEYS[2])) do
    top = math.max(top, tonumber(seq))
  end
  top = top + 1
  redis.call('SET', KEYS[3], top)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], top, n)
end
return redis.call('HGETALL', KEYS[2])
"""
# KEYS: pending, in-flight hash, dirty set; ARGV: token, how many views to take back, applied seqs...
# Deletes the applied entries, and the token from the dirty set once nothing is left to flush.
SETTLE_VIEWS_LUA = """
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > 0 then
  left = redis.call('DECRBY', KEYS[1], ARGV[2])
end
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
end
if left <= 0 then
  redis.call('DEL', KEYS[1])
  if redis.call('HLEN', KEYS[2]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[1])
    return 1
  end
end
return 0
"""


def _pending_key(token_id: int) -> str:
    return f"views:pending:{token_id}"


def _inflight_key(token_id: int) -> str:
    return f"views:inflight:{token_id}"


def _seq_key(token_id: int) -> str:
    return f"views:seq:{token_id}"


class ViewCounters(msgspec.Struct, frozen=True):
    """A token's views not yet in MongoDB, read in one Redis transaction."""

    pending: int = 0
    inflight: dict[int, int] = {}  # flush seq -> views
    top: int = 0  # the last flush seq handed out


def _queue_views(pipe, token_id: int, *, count: bool) -> None:
    if count:
        pipe.incr(_pending_key(token_id))
        pipe.sadd(VIEWS_DIRTY, token_id)
    else:
        pipe.get(_pending_key(token_id))
    pipe.hgetall(_inflight_key(token_id))
    pipe.get(_seq_key(token_id))


def _views(replies: list[Any], *, counted: bool) -> ViewCounters:
    pending, *rest = replies
    inflight, top = rest[1:] if counted else rest
    return ViewCounters(
        pending=max(int(pending or 0), 0),
        inflight={int(seq): int(n) for seq, n in (inflight or {}).items()},
        top=int(top or 0),
    )


async def _view_snapshot(redis, token_id: int) -> ViewCounters:
    pipe = redis.pipeline(transaction=True)
    _queue_views(pipe, token_id, count=False)
    return _views(await pipe.execute(), counted=False)


async def _view_snapshot_or_none(redis, token_id: int) -> ViewCounters | None:
    try:
        return await _view_snapshot(redis, token_id)
    except (RedisError, OSError) as exc:
        log.warning("assets.views.read_failed", token_id=token_id, error=str(exc))
        return None


def _applied_seq(doc: dict[str, Any]) -> int:
    return int((doc.get("stats") or {}).get("viewFlushSeq") or 0)


def visible_views(stats: dict[str, Any], views: ViewCounters | None) -> int:
    """Stored views plus those not yet in MongoDB (the in-flight entries it has not applied)."""
    stored = int(stats.get("viewCount") or 0)
    if views is None:
        return stored
    applied = int(stats.get("viewFlushSeq") or 0)
    return stored + views.pending + sum(n for seq, n in views.inflight.items() if seq > applied)


async def _unview(redis, token_id: int, *, drop_cache: bool) -> None:
    """Take back the view of a token that has no asset, so 404s leave nothing to flush."""
    try:
        script = redis.register_script(SETTLE_VIEWS_LUA)
        await script(keys=[_pending_key(token_id), _inflight_key(token_id), VIEWS_DIRTY], args=[token_id, 1])
        if drop_cache:
            await cache.drop(redis, _detail_key(token_id))
    except (RedisError, OSError) as exc:
        log.warning("assets.views.unview_failed", token_id=token_id, error=str(exc))


def _pairs(flat: list[Any]) -> dict[int, int]:
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


async def move_views(redis, token_ids: list[int]) -> dict[int, dict[int, int]]:
    """Flush step 1: each token's pending views become a numbered in-flight entry; returns all entries
    per token (an empty dict for a token with nothing to apply, so step 3 still settles it)."""
    if not token_ids:
        return {}
    # MongoDB's last applied seq is a floor for the next one, should Redis have lost the counters.
    floors = {
        doc["tokenId"]: _applied_seq(doc)
        async for doc in assets_collection().find(
            {"tokenId": {"$in": token_ids}}, {"tokenId": 1, "stats.viewFlushSeq": 1}
        )
    }
    script = redis.register_script(MOVE_VIEWS_LUA)
    pipe = redis.pipeline(transaction=False)
    for token_id in token_ids:
        await script(
            keys=[_pending_key(token_id), _inflight_key(token_id), _seq_key(token_id)],
            args=[floors.get(token_id, 0)],
            client=pipe,
        )
    replies = await pipe.execute()
    return {token_id: _pairs(reply) for token_id, reply in zip(token_ids, replies, strict=True)}


async def apply_views(entries: dict[int, dict[int, int]]) -> int:
    """Flush step 2: add each in-flight entry to `stats.viewCount` unless MongoDB has it already."""
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


async def settle_views(redis, entries: dict[int, dict[int, int]]) -> None:
    """Flush step 3: forget the applied entries, and the tokens with nothing left to flush."""
    script = redis.register_script(SETTLE_VIEWS_LUA)
    pipe = redis.pipeline(transaction=False)
    for token_id, by_seq in entries.items():
        await script(
            keys=[_pending_key(token_id), _inflight_key(token_id), VIEWS_DIRTY],
            args=[token_id, 0, *by_seq],
            client=pipe,
        )
    if entries:
        await pipe.execute()


async def flush_views(redis, *, batch_size: int = FLUSH_BATCH) -> dict[str, int]:
    """Move every pending view count into MongoDB, exactly once (safe to crash, retry or run twice)."""
    tokens = [int(member) async for member in redis.sscan_iter(VIEWS_DIRTY, count=batch_size)]
    applied = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        entries = await move_views(redis, batch)
        applied += await apply_views(entries)
        await settle_views(redis, entries)
    return {"tokens": len(tokens), "applied": applied}


# ---------------------------------------------------------------- migrations


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


# ---------------------------------------------------------------- writes


def _metadata_document(metadata: schemas.MetadataIn | None, custom: dict[str, Any] | None) -> AssetMetadata:
    data = msgspec.to_builtins(metadata) if metadata is not None else {}
    data = {key: value for key, value in data.items() if value is not None}
    attributes = {**(data.pop("customAttributes", None) or {}), **(custom or {})}
    check_attributes(attributes)
    _check_attribute_size(attributes)
    try:
        return AssetMetadata(**data, customAttributes=attributes)
    except ValueError as exc:
        raise BadRequest(f"invalid metadata: {exc}", code="invalid_metadata") from None


async def create_asset(
    clients,
    settings: Settings,
    data: schemas.AssetCreate,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Onboard an asset; 409 when its tokenId exists."""
    if not data.name.strip() or len(data.name) > 200:
        raise BadRequest("name must be 1 to 200 characters", code="invalid_name")
    if len(data.description) > 10_000:
        raise BadRequest("description is longer than 10000 characters", code="invalid_description")
    require_one_of(data.assetType, schemas.ASSET_TYPES, field="assetType", code="invalid_asset_type")
    if not 0 <= data.tokenId <= MAX_TOKEN_ID:
        raise BadRequest("tokenId must be an integer from 0 to 2^63-1", code="invalid_token_id")
    now = utcnow()
    owner = parse_address(data.owner, "owner") if data.owner else principal.wallet_address
    asset = Asset(
        tokenId=data.tokenId,
        contractAddress=parse_address(data.contractAddress, "contractAddress"),
        name=data.name.strip(),
        assetType=data.assetType,
        description=data.description,
        metadata=_metadata_document(data.metadata, data.customAttributes),
        ownership=Ownership(currentOwner=owner, ownerSince=now),
        createdAt=now,
        updatedAt=now,
    )
    try:
        await asset.insert()
    except DuplicateKeyError:
        raise Conflict(f"an asset with tokenId {data.tokenId} exists", code="duplicate_token") from None
    new = asset.model_dump(mode="json", exclude={"id", "revision_id"})
    await audit_service.record(
        "asset.create",
        principal=principal,
        context=context,
        entity_type="asset",
        entity_id=str(data.tokenId),
        old=None,
        new=new,
    )
    await invalidate(clients.redis, data.tokenId)
    # The market stats count assets by type and owner; metadata and verification are not in them.
    await market_service.invalidate_stats(clients.redis)
    return await detail_after_write(clients, settings, data.tokenId, principal)


async def detail_after_write(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """The detail body as the write left it (no view counted, the views not yet flushed included)."""
    views = await _view_snapshot_or_none(clients.redis, token_id)
    doc = await get_raw(token_id)
    if views is not None and _applied_seq(doc) > views.top:  # a flush ran in between: as in asset_detail
        views = await _view_snapshot_or_none(clients.redis, token_id)
        doc["stats"] = (await get_raw(token_id, {"stats": 1})).get("stats")
    return await render_detail(static_detail(doc), doc, principal, clients.storage, settings, views)


async def verify_asset(
    clients,
    settings: Settings,
    token_id: int,
    data: schemas.VerifyRequest,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Record the platform's verification of an asset (admin)."""
    known_token(token_id)
    if data.verificationData is not None:
        check_attributes(data.verificationData, "verificationData")
        _check_attribute_size(data.verificationData)
    now = utcnow()
    verification = {
        "isVerified": data.isVerified,
        "verifiedBy": principal.wallet_address if data.isVerified else None,
        "verifiedAt": now if data.isVerified else None,
        "verificationData": data.verificationData or {},
    }
    old = await assets_collection().find_one_and_update(
        {"tokenId": token_id},
        {"$set": {"verification": verification, "updatedAt": now}, "$inc": {"version": 1}},
        projection={"verification": 1},
        return_document=ReturnDocument.BEFORE,
    )
    if old is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    await audit_service.record(
        "asset.verify",
        principal=principal,
        context=context,
        entity_type="asset",
        entity_id=str(token_id),
        old={"verification": _plain(old.get("verification"))},
        new={"verification": _plain(verification)},
    )
    await invalidate(clients.redis, token_id)
    return await detail_after_write(clients, settings, token_id, principal)


def _validated_metadata_changes(patch: dict[str, Any]) -> dict[str, Any]:
    """`$set` values for the metadata fields given (None clears), each checked against its type."""
    unknown = sorted(set(patch) - (METADATA_FIELDS - {"customAttributes"}))
    if unknown:
        raise BadRequest(
            f"these metadata fields cannot be changed here: {', '.join(unknown)}",
            code="field_not_editable",
            details={"fields": unknown},
        )
    try:
        typed = msgspec.convert(patch, schemas.MetadataIn, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid metadata: {exc}", code="invalid_metadata") from None
    changes: dict[str, Any] = {}
    for name in patch:
        value = getattr(typed, name)
        if value is None:
            changes[f"metadata.{name}"] = [] if name in ("materials", "provenance", "certificates") else None
            continue
        if name in ("provenance", "certificates"):
            value = [msgspec.structs.asdict(item) for item in value]
        changes[f"metadata.{name}"] = value
    return changes


async def update_metadata(
    clients,
    settings: Settings,
    token_id: int,
    patch: schemas.MetadataPatch,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Change an asset's metadata and custom attributes (owner or admin), if `version` is current."""
    current = await get_raw(
        token_id, {"ownership.currentOwner": 1, "metadata": 1, "version": 1, "updatedAt": 1}
    )
    ensure_permission(principal, METADATA_PERMISSION)
    ensure_owner_or_admin(principal, (current.get("ownership") or {}).get("currentOwner"))
    changes = _validated_metadata_changes(patch.metadata or {})
    if len(msgspec.json.encode(patch.metadata or {})) > MAX_ATTRIBUTE_BYTES:
        raise BadRequest("metadata is too large", code="invalid_metadata")
    if patch.customAttributes is not None:
        check_attributes(patch.customAttributes)
        attributes = dict((current.get("metadata") or {}).get("customAttributes") or {})
        for key, value in patch.customAttributes.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        _check_attribute_size(attributes)
        changes["metadata.customAttributes"] = attributes
    if not changes:
        raise BadRequest("nothing to change: give metadata and/or customAttributes", code="empty_patch")
    now = utcnow()
    result = await assets_collection().update_one(
        {"tokenId": token_id, "version": patch.version}
        if patch.version
        else {"tokenId": token_id, "version": {"$in": [0, None]}},
        {"$set": {**changes, "updatedAt": now}, "$inc": {"version": 1}},
    )
    if result.matched_count == 0:
        latest = await get_raw(token_id, {"version": 1, "updatedAt": 1})
        raise Conflict(
            "the asset changed since you read it; re-read it and apply your change again",
            code="version_conflict",
            details={"currentVersion": latest.get("version", 0), "updatedAt": latest.get("updatedAt")},
        )
    old_metadata = current.get("metadata") or {}
    old = {path: _plain(old_metadata.get(path.split(".", 1)[1])) for path in changes}
    await audit_service.record(
        "asset.metadata.update",
        principal=principal,
        context=context,
        entity_type="asset",
        entity_id=str(token_id),
        old={"version": current.get("version", 0), **old},
        new={"version": patch.version + 1, **_plain(changes)},
    )
    await invalidate(clients.redis, token_id)
    return await detail_after_write(clients, settings, token_id, principal)


# ---------------------------------------------------------------- price history

INTERVAL_UNITS = {
    "1h": ("hour", timedelta(hours=1)),
    "1d": ("day", timedelta(days=1)),
    "1w": ("week", timedelta(weeks=1)),
}
MAX_BUCKETS = 2_000
MAX_POINTS = 1_000
DEFAULT_POINTS = 500
DEFAULT_SPAN = {"1h": timedelta(days=7), "1d": timedelta(days=180), "1w": timedelta(days=730)}
HISTORY_SORT = Sort("timestamp", 1)


def _history_filter(
    token_id: int, start: datetime | None, end: datetime | None, source: str | None
) -> dict[str, Any]:
    query: dict[str, Any] = {"tokenId": token_id}
    window: dict[str, datetime] = {}
    if start is not None:
        window["$gte"] = client_time(start, "from")
    if end is not None:
        window["$lt"] = client_time(end, "to")
    if window:
        query["timestamp"] = window
    if source is not None:
        query["source.type"] = require_one_of(
            source, schemas.PRICE_SOURCES, field="source", code="invalid_source"
        )
    return query


def _point(doc: dict[str, Any]) -> schemas.PricePoint:
    source = doc.get("source") or {}
    return schemas.PricePoint(
        timestamp=doc["timestamp"],
        price=doc["price"],
        priceWei=wei_string(doc.get("priceWei")),
        priceUsd=doc.get("priceUsd"),
        source=source.get("type"),
        dataSourceName=source.get("dataSourceName"),
        modelVersion=source.get("modelVersion"),
        confidenceScore=(doc.get("aiMetrics") or {}).get("confidenceScore"),
        transactionHash=(doc.get("blockchain") or {}).get("transactionHash"),
    )


async def price_history(
    settings: Settings,
    token_id: int,
    *,
    start: datetime | None,
    end: datetime | None,
    source: str | None,
    interval: str,
    limit: int | None,
    cursor: str | None,
) -> schemas.PriceHistoryPage:
    """Raw points (oldest first, paged) or OHLC buckets computed by an aggregation."""
    require_one_of(interval, schemas.INTERVALS, field="interval", code="invalid_interval")
    if start is not None and end is not None and client_time(start, "from") >= client_time(end, "to"):
        raise BadRequest("from must be before to", code="invalid_range")
    await get_raw(token_id, {"_id": 1})
    if interval == "raw":
        return await _raw_history(settings, token_id, start, end, source, limit, cursor)
    if cursor is not None:
        raise BadRequest("cursor applies to raw points only", code="invalid_cursor")
    unit, step = INTERVAL_UNITS[interval]
    end = client_time(end, "to") if end is not None else utcnow()
    start = client_time(start, "from") if start is not None else end - DEFAULT_SPAN[interval]
    if (end - start) / step > MAX_BUCKETS:
        raise BadRequest(
            f"at most {MAX_BUCKETS} buckets: shorten the range or widen the interval", code="range_too_large"
        )
    truncate: dict[str, Any] = {"date": "$timestamp", "unit": unit}
    if unit == "week":
        truncate["startOfWeek"] = "monday"
    pipeline = [
        {"$match": _history_filter(token_id, start, end, source)},
        {"$sort": {"timestamp": 1}},
        {
            "$group": {
                "_id": {"$dateTrunc": truncate},
                "open": {"$first": "$price"},
                "close": {"$last": "$price"},
                "high": {"$max": "$price"},
                "low": {"$min": "$price"},
                "mean": {"$avg": "$price"},
                "count": {"$sum": 1},
                "meanConfidence": {"$avg": "$aiMetrics.confidenceScore"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    async with bounded_query():
        rows = await (
            await history_collection().aggregate(pipeline, maxTimeMS=settings.mongodb.max_time_ms)
        ).to_list()
    buckets = [
        schemas.PriceBucket(
            bucket=row["_id"],
            open=row["open"],
            high=row["high"],
            low=row["low"],
            close=row["close"],
            mean=row["mean"],
            count=row["count"],
            meanConfidence=row.get("meanConfidence"),
        )
        for row in rows
    ]
    return schemas.PriceHistoryPage(tokenId=token_id, interval=interval, buckets=buckets)


async def _raw_history(
    settings: Settings,
    token_id: int,
    start: datetime | None,
    end: datetime | None,
    source: str | None,
    limit: int | None,
    cursor: str | None,
) -> schemas.PriceHistoryPage:
    size = parse_limit(limit, MAX_POINTS, DEFAULT_POINTS)
    scope = f"price-history:{token_id}"
    secret = settings.auth.jwt_secret.get_secret_value()
    after = decode_cursor(secret, scope, cursor) if cursor is not None else None
    async with bounded_query():
        docs, last = await keyset_page(
            history_collection(),
            _history_filter(token_id, start, end, source),
            HISTORY_SORT,
            limit=size,
            after=after,
            projection=None,
            max_time_ms=settings.mongodb.max_time_ms,
        )
    return schemas.PriceHistoryPage(
        tokenId=token_id,
        interval="raw",
        points=[_point(doc) for doc in docs],
        nextCursor=encode_cursor(secret, scope, last) if last else None,
    )


def history_csv(page: schemas.PriceHistoryPage) -> str:
    """The page as CSV for analysts: one row per point or bucket, ISO-8601 UTC times."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if page.points is not None:
        columns = [
            "timestamp",
            "price",
            "priceWei",
            "priceUsd",
            "source",
            "dataSourceName",
            "modelVersion",
            "confidenceScore",
            "transactionHash",
        ]
        rows = [[getattr(point, name) for name in columns] for point in page.points]
    else:
        columns = ["bucket", "open", "high", "low", "close", "mean", "count", "meanConfidence"]
        rows = [[getattr(bucket, name) for name in columns] for bucket in page.buckets or []]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row])
    return out.getvalue()
