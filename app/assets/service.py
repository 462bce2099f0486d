"""Assets: onboarding, verification and metadata, lists, details, and what other domains ask of assets.

It composes the capabilities of the domain: `reading` (an asset by tokenId, and its detail as read),
`catalog` (filtered lists), `detail` (what each role sees, the cached public part), `views` (views
counted in Redis), `media_view` (media per caller), `metadata` (what a write may store), `history`
(price history) and `token_metadata` (what a tokenURI serves); every query is in `repository`. Every
write bumps `version` and `updatedAt` and then invalidates the cached detail, after it has committed.
"""

from __future__ import annotations

from typing import Any

from app.assets import (
    announcing,
    catalog,
    chain_state,
    detail,
    history,
    history_schemas,
    media_records,
    metadata,
    onchain,
    price_records,
    pricing,
    reading,
    repository,
    schemas,
    views,
)
from app.assets.documents import Asset, AssetChain, Ownership
from app.assets.documents import AssetMedia as AssetMedia  # the media domain's record types
from app.assets.documents import MediaFile as MediaFile
from app.assets.reading import MAX_TOKEN_ID, detail_after_write, get_raw, known_token
from app.assets.schemas import TypeFigures as TypeFigures  # the market stats' rows per asset type
from app.assets.token_metadata import token_metadata
from app.assets.token_schemas import TokenMetadata
from app.audit import service as audit_service
from app.config import Settings
from app.lib import cache
from app.lib.context import SYSTEM, RequestContext
from app.lib.errors import BadRequest, Conflict, NotFound, require_one_of
from app.lib.params import parse_address
from app.lib.security import Principal
from app.lib.timeutil import utcnow

# What a caller needs, besides owning the asset, to change its metadata (a signed-in user has it); the
# route checks it, with the ownership.
METADATA_PERMISSION = "assets:metadata"
# What the catalog's and history's parameters take (documented by the controllers).
SORTS = tuple(repository.ASSET_SORTS)
MAX_QUERY_CHARS = catalog.MAX_QUERY_CHARS
MAX_HISTORY_LIMIT = history.MAX_POINTS
# Bumped when an asset is added: the market stats count assets by type and owner, and recompute when it
# moves (read it beside other keys, e.g. in one MGET). Metadata and verification are not in them.
CATALOG_GENERATION_KEY = f"{cache.PREFIX}assets:catalog:generation"


async def owner_of(token_id: int) -> str | None:
    """The wallet that owns the asset (404 when there is none): what the owner-or-admin guard checks."""
    raw = await get_raw(token_id, {"ownership.currentOwner": 1})
    return (raw.get("ownership") or {}).get("currentOwner")


# ---------------------------------------------------------------- lists


async def list_assets(
    clients, settings: Settings, asked: schemas.AssetQuery, *, listings: bool = False
) -> schemas.AssetPage:
    """One page of assets (or of active listings, by their asking price) matching the filters, in a fixed
    order, with an opaque cursor to the next."""
    query = catalog.asset_filter(asked, listings=listings)
    return await catalog.page(clients.storage, settings, query, asked, listings=listings)


# ---------------------------------------------------------------- the detail

asset_detail = reading.asset_detail  # full details of one asset, counting the view


async def asset_token_metadata(clients, settings: Settings, token_id: int) -> TokenMetadata:
    """The asset's token metadata in OpenSea's standard (what its tokenURI serves), from its public
    detail; counts no view."""
    return await token_metadata(clients, settings, known_token(token_id))


# ---------------------------------------------------------------- writes


async def create_asset(
    clients,
    settings: Settings,
    data: schemas.AssetCreate,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Onboard an asset; 409 when its tokenId exists."""
    if not data.name.strip() or len(data.name) > schemas.MAX_NAME_CHARS:
        raise BadRequest(f"name must be 1 to {schemas.MAX_NAME_CHARS} characters", code="invalid_name")
    if len(data.description) > schemas.MAX_DESCRIPTION_CHARS:
        raise BadRequest(
            f"description is longer than {schemas.MAX_DESCRIPTION_CHARS} characters",
            code="invalid_description",
        )
    require_one_of(data.assetType, schemas.ASSET_TYPES, field="assetType", code="invalid_asset_type")
    if not 0 <= data.tokenId <= MAX_TOKEN_ID:
        raise BadRequest("tokenId must be an integer from 0 to 2^63-1", code="invalid_token_id")
    now = utcnow()
    owner = principal.wallet_address if data.owner is None else parse_address(data.owner, "owner")
    contract, mints = await onchain.contract_of(clients, settings, data.contractAddress, owner)
    asset = Asset(
        tokenId=data.tokenId,
        contractAddress=contract,
        chain=AssetChain(contractAddress=contract) if mints else None,
        name=data.name.strip(),
        assetType=data.assetType,
        description=data.description,
        metadata=metadata.document(data.metadata, data.customAttributes),
        ownership=Ownership(currentOwner=owner, ownerSince=now),
        createdAt=now,
        updatedAt=now,
    )
    if not await repository.insert(asset):
        raise Conflict(f"an asset with tokenId {data.tokenId} exists", code="duplicate_token")
    if mints and owner is not None:  # a crash before this ask: `assets.request_mints` asks again
        await onchain.request_mint(clients, settings, data.tokenId, contract, owner)
    new = asset.model_dump(mode="json", exclude={"id", "revision_id"})
    return await _written(
        clients, settings, data.tokenId, principal, context, "asset.create", None, new, added=True
    )


async def verify_asset(
    clients,
    settings: Settings,
    token_id: int,
    data: schemas.VerifyRequest,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Record the platform's verification of an asset (the route admits admins only)."""
    known_token(token_id)
    if data.verificationData is not None:
        metadata.check_attributes(data.verificationData, "verificationData")
        metadata.check_attribute_size(data.verificationData)
    now = utcnow()
    verification = {
        "isVerified": data.isVerified,
        "verifiedBy": principal.wallet_address if data.isVerified else None,
        "verifiedAt": now if data.isVerified else None,
        "verificationData": data.verificationData or {},
    }
    old = await repository.set_verification(token_id, verification, now)
    if old is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    before = {"verification": detail.plain(old.get("verification"))}
    after = {"verification": detail.plain(verification)}
    return await _written(clients, settings, token_id, principal, context, "asset.verify", before, after)


async def update_metadata(
    clients,
    settings: Settings,
    token_id: int,
    patch: schemas.MetadataPatch,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> dict[str, Any]:
    """Change an asset's metadata and custom attributes, if `version` is current (the route admits the
    owner and admins only, with `assets:metadata`)."""
    current = await get_raw(token_id, {"metadata": 1, "version": 1, "updatedAt": 1})
    changes = metadata.patch_changes(patch, current.get("metadata") or {})
    if not changes:  # an empty merge patch changes nothing (RFC 7396), if its version is current
        if current.get("version", 0) != patch.version:
            raise metadata.version_conflict(current)
        return await detail_after_write(clients, settings, token_id, principal)
    announced = [metadata.announcement(token_id, patch.version + 1, changes)]
    if not await repository.set_if_version(token_id, patch.version, changes, utcnow(), announced):
        raise metadata.version_conflict(await get_raw(token_id, {"version": 1, "updatedAt": 1}))
    old_metadata = current.get("metadata") or {}
    old = {path: detail.plain(old_metadata.get(path.split(".", 1)[1])) for path in changes}
    before = {"version": current.get("version", 0), **old}
    after = {"version": patch.version + 1, **detail.plain(changes)}
    written = await _written(
        clients, settings, token_id, principal, context, "asset.metadata.update", before, after
    )
    await announcing.announce_soon(clients, settings, token_id)  # after the cache is fresh
    return written


async def _written(
    clients,
    settings: Settings,
    token_id: int,
    principal: Principal,
    context: RequestContext,
    action: str,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    added: bool = False,
) -> dict[str, Any]:
    """After a committed write: audit it, drop the cached detail (and tell the market stats when an
    asset was `added`), and return the detail as the write left it."""
    await audit_service.record(
        action,
        principal=principal,
        context=context,
        entity_type="asset",
        entity_id=str(token_id),
        old=old,
        new=new,
    )
    await detail.invalidate(clients.redis, token_id)
    if added:
        await catalog_changed(clients.redis)
    return await detail_after_write(clients, settings, token_id, principal)


# ---------------------------------------------------------------- price history


async def price_history(
    settings: Settings, token_id: int, query: history_schemas.HistoryQuery
) -> history_schemas.PriceHistoryPage:
    """Raw points (oldest first, paged) or OHLC buckets computed by an aggregation."""
    history.check_range(query.interval, query.start, query.end)
    await get_raw(token_id, {"_id": 1})
    return await history.page(settings, token_id, query)


async def price_history_csv(
    settings: Settings, token_id: int, query: history_schemas.HistoryQuery
) -> tuple[str, str | None]:
    """`price_history` as CSV (one row per point or bucket), and the cursor to the next page of points."""
    page = await price_history(settings, token_id, query)
    return history.as_csv(page), page.nextCursor


# ---------------------------------------------------------------- for jobs and other domains


announce_pending = announcing.announce_pending  # the assets.announce_pending sweep
flush_views = views.flush_views  # views counted in Redis into `stats.viewCount`, exactly once
backfill_name_lower = repository.backfill_name_lower  # `nameLower` for assets written before it existed
request_pending_mints = onchain.request_pending_mints  # the assets.request_mints sweep


async def catalog_changed(redis) -> None:
    """Call after assets are added or removed (create_asset; scripts/seed.py, which writes them itself):
    the market stats, which count them, are recomputed on their next read."""
    await redis.incr(CATALOG_GENERATION_KEY)


catalog_figures = catalog.figures  # counts, listings, prices per type and distinct owners (one query)


# ---- for the oracle domain

AppraisedPrice = pricing.AppraisedPrice
appraisal_batch = price_records.appraisal_batch  # the next assets by tokenId, with what an appraisal reads


async def apply_appraisals(redis, items: list[pricing.AppraisedPrice]) -> dict[str, int]:
    """Set the appraisals as the assets' prices where newer, with a price point each; the market stats,
    which read prices, are recomputed on their next read."""
    result = await pricing.apply(items)
    if result["assetsChanged"]:
        await catalog_changed(redis)
    return result


# ---- for the market domain: what the chain indexer reads of the platform's tokens

ChainState, ChainListing, ChainSale = chain_state.ChainState, chain_state.ChainListing, chain_state.ChainSale
confirm_chain_states, minted_sample = chain_state.confirm, chain_state.minted_sample


async def apply_chain_states(redis, states: list[chain_state.ChainState]) -> set[int]:
    """Owners, listings, mints and sale points as the chain has them; the market stats follow. Returns
    the tokens whose state could not be written (logged), to be tried again."""
    changed, refused = await chain_state.apply(states)
    if changed:
        await catalog_changed(redis)
    return refused


# ---- for the media domain
# Each asset's `media` sub-document (files, key lists, thumbnail) holds the media domain's records, read
# as the record types AssetMedia and MediaFile re-exported above. The media domain decides what they
# hold; `media_records` alone queries and writes them, and these are its calls. The upload caps are
# part of the `$push`'s filter, so concurrent uploads cannot overshoot them.

UploadCaps = media_records.UploadCaps
media_records_of = media_records.media_of
has_upload_room = media_records.has_upload_room
find_staged_upload = media_records.find_staged_upload
recorded_highres_key = media_records.recorded_highres_key
tokens_with_highres_not_matching = media_records.tokens_with_highres_not_matching
add_media_file_if_room = media_records.add_media_file_if_room
put_media_file = media_records.put_media_file
media_announced = repository.media_announced  # the media state last announced (`media_processed`)
drop_media_file = media_records.drop_media_file
index_media_key = media_records.index_media_key
reject_media_file = media_records.reject_media_file
set_thumbnail = media_records.set_thumbnail
drop_thumbnails = media_records.drop_thumbnails
drop_staged_uploads_before = media_records.drop_staged_uploads_before
