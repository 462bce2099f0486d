"""The catalog: assets and listings browsed by filters and sorts in keyset pages, and its market figures."""

from __future__ import annotations

from functools import partial
from typing import Any

from app.assets import repository, schemas
from app.config import Settings
from app.lib.errors import BadRequest, require_one_of
from app.lib.money import wei_string
from app.lib.params import parse_address, parse_limit, parse_sort, signed_page

MAX_QUERY_CHARS = 100


def asset_filter(filters: schemas.AssetQuery, *, listings: bool = False) -> dict[str, Any]:
    """The query for these filters, each checked first (nothing a client sends becomes a query)."""
    if filters.asset_type is not None:
        require_one_of(filters.asset_type, schemas.ASSET_TYPES, field="assetType", code="invalid_asset_type")
    owner = parse_address(filters.owner, "owner") if filters.owner is not None else None
    min_price, max_price, q = filters.min_price, filters.max_price, filters.q
    price: dict[str, float] = {}
    for op, bound, name in (("$gte", min_price, "minPrice"), ("$lte", max_price, "maxPrice")):
        if bound is not None:
            if bound != bound or bound < 0 or bound in (float("inf"), float("-inf")):
                raise BadRequest(f"{name} must be a non-negative number", code="invalid_price")
            price[op] = float(bound)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise BadRequest("minPrice is above maxPrice", code="invalid_price")
    if q is not None and (not q.strip() or len(q) > MAX_QUERY_CHARS):
        raise BadRequest(f"q must be 1 to {MAX_QUERY_CHARS} characters", code="invalid_query")
    return repository.asset_query(
        asset_type=filters.asset_type,
        owner=owner,
        is_listed=filters.is_listed,
        is_verified=filters.is_verified,
        price=price,
        name_prefix=q.strip() if q is not None else None,
        listings=listings,
    )


def _thumbnail(storage, key: str | None) -> str | None:
    if not key:
        return None
    return key if key.startswith(("http://", "https://")) else storage.public_url(key)


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


async def page(
    storage, settings: Settings, query: dict[str, Any], asked: schemas.AssetQuery, *, listings: bool = False
) -> schemas.AssetPage:
    """One page of the assets matching `query`, in the order `asked`, with an opaque cursor to the next."""
    sort, limit, cursor = asked.sort, asked.limit, asked.cursor
    sort_name, order = parse_sort(sort, repository.LISTING_SORTS if listings else repository.ASSET_SORTS)
    size = parse_limit(limit)
    scope = f"{'listings' if listings else 'assets'}:{sort_name}"
    fetch = partial(repository.list_page, query, order, limit=size, max_time_ms=settings.mongodb.max_time_ms)
    docs, next_cursor = await signed_page(settings.auth.jwt_secret.get_secret_value(), scope, cursor, fetch)
    return schemas.AssetPage(
        items=[list_item(doc, storage) for doc in docs], nextCursor=next_cursor, limit=size
    )


async def figures(max_time_ms: int) -> schemas.CatalogFigures:
    """Counts, listings, floor, mean and median prices per asset type, and distinct owners (one query)."""
    raw = await repository.catalog_figures(max_time_ms)
    owners = raw["owners"]
    return schemas.CatalogFigures(
        byType=[
            schemas.TypeFigures(
                assetType=row["_id"],
                count=row["count"],
                listedCount=row["listed"],
                floorPrice=row.get("floorPrice"),
                floorPriceWei=wei_string(row.get("floorPriceWei")),
                meanPrice=row.get("meanPrice"),
                medianPrice=row.get("medianPrice"),
            )
            for row in raw["byType"]
        ],
        uniqueOwners=owners[0]["owners"] if owners else 0,
    )
