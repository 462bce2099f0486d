"""Asset endpoints (seed plan 4.1): browse, detail, price history, onboarding, metadata, listings, and the
token metadata an AssetToken's tokenURI points at.

A detail is sent as the service renders it; `Response[schemas.AssetDetail]` documents its shape.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, MediaType, Request, Response, get, patch, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app.assets import history_schemas, schemas, service, token_schemas
from app.lib.deps import ClientsDep, ContextDep, SettingsDep
from app.lib.errors import BadRequest
from app.lib.openapi import answers_text, links, raises
from app.lib.params import (
    ADDRESS,
    ADDRESS_DOC,
    OPTIONAL_AUTH,
    PUBLIC,
    CursorParam,
    FromParam,
    LimitParam,
    TokenIdPath,
    ToParam,
    WalletPath,
    one_of,
    parse_time,
    sorts_of,
)
from app.lib.security import (
    current_principal,
    owner_or_admin,
    principal_of,
    requires_permission,
    requires_roles,
)

# The route's {tokenId} asset belongs to the caller, or the caller is an admin.
owns_asset = owner_or_admin(service.owner_of, path_param="tokenId", missing="asset_not_found")

AssetTypeParam = Annotated[
    str | None, QueryParameter(name="assetType", schema_extra=one_of(schemas.ASSET_TYPES))
]
OwnerParam = Annotated[
    str | None, QueryParameter(description=f"the owner: {ADDRESS_DOC}", schema_extra={"pattern": ADDRESS})
]
IsListedParam = Annotated[bool | None, QueryParameter(name="isListed")]
IsVerifiedParam = Annotated[bool | None, QueryParameter(name="isVerified")]
PRICE_RANGE = {"minimum": 0}
MinPriceParam = Annotated[
    float | None,
    QueryParameter(name="minPrice", description="ETH, at most maxPrice", schema_extra=PRICE_RANGE),
]
MaxPriceParam = Annotated[
    float | None, QueryParameter(name="maxPrice", description="ETH", schema_extra=PRICE_RANGE)
]
QParam = Annotated[
    str | None,
    QueryParameter(
        description="name prefix (case-insensitive, literal)",
        schema_extra={"minLength": 1, "maxLength": service.MAX_QUERY_CHARS, "pattern": r"\S"},
    ),
]
SortParam = Annotated[
    str | None,
    QueryParameter(
        description="a field, ascending, or prefixed with '-' for descending. viewCount sorts by the stored "
        "count, which takes in new views every 15 s (the detail shows them at once)",
        schema_extra=sorts_of(service.SORTS),
    ),
]
# The refusals every browse of the catalog shares.
BROWSE_ERRORS = {
    400: [
        "invalid_address",
        "invalid_asset_type",
        "invalid_cursor",
        "invalid_limit",
        "invalid_price",
        "invalid_query",
        "invalid_sort",
    ],
    503: ["query_timeout"],
}
HISTORY_ERRORS = {
    400: [
        "invalid_cursor",
        "invalid_format",
        "invalid_interval",
        "invalid_limit",
        "invalid_range",
        "invalid_source",
        "range_too_large",
        "timestamp_out_of_range",
    ],
    404: ["asset_not_found"],
    503: ["query_timeout"],
}
ASSET_LINKS = links(
    201,
    get_asset={"tokenId": "$response.body#/tokenId"},
    price_history={"tokenId": "$response.body#/tokenId"},
    update_metadata={"tokenId": "$response.body#/tokenId"},
    verify_asset={"tokenId": "$response.body#/tokenId"},
    process_media={"tokenId": "$response.body#/tokenId"},
)


def asset_query(
    asset_type: AssetTypeParam = None,
    owner: OwnerParam = None,
    is_verified: IsVerifiedParam = None,
    min_price: MinPriceParam = None,
    max_price: MaxPriceParam = None,
    q: QParam = None,
    sort: SortParam = None,
    limit: LimitParam = None,
    cursor: CursorParam = None,
) -> schemas.AssetQuery:
    """The query parameters that browsing assets and listings share, as sent (the service checks them)."""
    return schemas.AssetQuery(
        asset_type=asset_type,
        owner=owner,
        is_verified=is_verified,
        min_price=min_price,
        max_price=max_price,
        q=q,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )


# The handlers that browse the catalog take those parameters through this one dependency.
BROWSE = {"asked": Provide(asset_query, sync_to_thread=False)}
AssetQueryDep = NamedDependency[schemas.AssetQuery]


class AssetController(Controller):
    path = "/api/assets"
    tags = ["assets"]

    @get("/", opt={**PUBLIC, **raises(BROWSE_ERRORS)}, dependencies=BROWSE)
    async def list_assets(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        asked: AssetQueryDep,
        is_listed: IsListedParam = None,
    ) -> schemas.AssetPage:
        """Browse assets: filters, a fixed set of sorts, and keyset pages (`nextCursor`)."""
        asked = msgspec.structs.replace(asked, is_listed=is_listed)
        return await service.list_assets(clients, settings, asked)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        guards=[requires_permission("assets:write")],
        opt={
            **raises(
                {
                    400: [
                        "invalid_address",
                        "invalid_asset_type",
                        "invalid_attributes",
                        "invalid_description",
                        "invalid_metadata",
                        "invalid_name",
                        "invalid_token_id",
                        "operator_not_allowed",
                    ],
                    409: ["duplicate_token", "no_asset_token"],
                }
            ),
            **ASSET_LINKS,
        },
    )
    async def create_asset(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        data: JSONBody[schemas.AssetCreate],
    ) -> Response[schemas.AssetDetail]:
        """Onboard an asset (admins and `assets:write` keys); 409 when the tokenId exists.

        Without `contractAddress` the asset is of the platform's AssetToken, which mints the token to
        its owner (`chain.status`: pending, then minted and confirmed as the chain indexer reads it).
        """
        body = await service.create_asset(clients, settings, data, current_principal(request), context)
        return Response(body, status_code=HTTP_201_CREATED)

    @get(
        "/{tokenId:int}",
        opt={
            **OPTIONAL_AUTH,
            **raises({404: ["asset_not_found"], 503: ["query_timeout"]}),
        },
    )
    async def get_asset(
        self, request: Request, clients: ClientsDep, settings: SettingsDep, tokenId: TokenIdPath
    ) -> Response[schemas.AssetDetail]:
        """Full details of an asset with media URLs for this caller; counts a view."""
        return Response(await service.asset_detail(clients, settings, tokenId, principal_of(request)))

    @post(
        "/{tokenId:int}/verify",
        status_code=HTTP_200_OK,
        guards=[requires_roles("admin")],
        opt=raises({400: ["invalid_attributes", "operator_not_allowed"], 404: ["asset_not_found"]}),
    )
    async def verify_asset(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        tokenId: TokenIdPath,
        data: JSONBody[schemas.VerifyRequest | None] = None,
    ) -> Response[schemas.AssetDetail]:
        """Record the platform's verification of an asset (admin)."""
        body = await service.verify_asset(
            clients, settings, tokenId, data or schemas.VerifyRequest(), current_principal(request), context
        )
        return Response(body)

    @patch(
        "/{tokenId:int}/metadata",
        guards=[requires_permission(service.METADATA_PERMISSION), owns_asset],
        opt=raises(
            {
                400: [
                    "field_not_editable",
                    "invalid_attributes",
                    "invalid_metadata",
                    "operator_not_allowed",
                ],
                409: ["version_conflict"],
            }
        ),
    )
    async def update_metadata(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        tokenId: TokenIdPath,
        data: JSONBody[schemas.MetadataPatch],
    ) -> Response[schemas.AssetDetail]:
        """Change metadata (owner or admin; keys need `assets:metadata`); 409 when `version` is stale."""
        body = await service.update_metadata(
            clients, settings, tokenId, data, current_principal(request), context
        )
        return Response(body)

    @get(
        "/{tokenId:int}/price-history",
        opt={
            **PUBLIC,
            **raises(HISTORY_ERRORS),
            **answers_text(
                200,
                "text/csv",
                "With format=csv: a header row, then one row per point or bucket; the next page's cursor "
                "is in the X-Next-Cursor header",
            ),
        },
    )
    async def price_history(
        self,
        request: Request,
        settings: SettingsDep,
        tokenId: TokenIdPath,
        start: FromParam = None,
        end: ToParam = None,
        source: Annotated[
            str | None, QueryParameter(schema_extra=one_of(history_schemas.PRICE_SOURCES))
        ] = None,
        interval: Annotated[
            str,
            QueryParameter(
                description="raw points, or OHLC buckets", schema_extra=one_of(history_schemas.INTERVALS)
            ),
        ] = "raw",
        limit: Annotated[
            int | None,
            QueryParameter(
                description="raw points per page",
                schema_extra={"minimum": 1, "maximum": service.MAX_HISTORY_LIMIT},
            ),
        ] = None,
        cursor: CursorParam = None,
        format: Annotated[str, QueryParameter(schema_extra=one_of(("json", "csv")))] = "json",
    ) -> Response[history_schemas.PriceHistoryPage]:
        """Price points (paged) or OHLC buckets over a time range; CSV with `format=csv`."""
        if format not in ("json", "csv"):
            raise BadRequest("format must be json or csv", code="invalid_format")
        query = history_schemas.HistoryQuery(
            start=parse_time(start, "from"),
            end=parse_time(end, "to"),
            source=source,
            interval=interval,
            limit=limit,
            cursor=cursor,
        )
        if format == "csv":
            text, next_cursor = await service.price_history_csv(settings, tokenId, query)
            headers = {"Content-Disposition": f'attachment; filename="price-history-{tokenId}.csv"'}
            if next_cursor:
                headers["X-Next-Cursor"] = next_cursor
            return Response(text, media_type="text/csv", headers=headers)
        page = await service.price_history(settings, tokenId, query)
        return Response(page, media_type=MediaType.JSON)


class UserAssetsController(Controller):
    path = "/api/users"
    tags = ["assets"]

    @get("/{walletAddress:str}/assets", opt={**PUBLIC, **raises(BROWSE_ERRORS)})
    async def user_assets(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        walletAddress: WalletPath,
        asset_type: AssetTypeParam = None,
        is_listed: IsListedParam = None,
        sort: SortParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> schemas.AssetPage:
        """Assets owned by a wallet."""
        asked = schemas.AssetQuery(
            owner=walletAddress,
            asset_type=asset_type,
            is_listed=is_listed,
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
        return await service.list_assets(clients, settings, asked)


class ListingController(Controller):
    """Listings are an asset query, so the assets domain serves them, under the market's path."""

    path = "/api/market"
    tags = ["market"]

    @get("/listings", opt={**PUBLIC, **raises(BROWSE_ERRORS)}, dependencies=BROWSE)
    async def listings(
        self, request: Request, clients: ClientsDep, settings: SettingsDep, asked: AssetQueryDep
    ) -> schemas.AssetPage:
        """Active listings, filtered and sorted like assets (price is the asking price)."""
        return await service.list_assets(clients, settings, asked, listings=True)


class TokenMetadataController(Controller):
    """What an AssetToken's `tokenURI(id)` points at (its base URI ends with this path), for marketplaces."""

    path = "/api/metadata"
    tags = ["assets"]

    @get(
        "/{tokenId:int}",
        cache_control=CacheControlHeader(public=True, max_age=60),
        opt={**PUBLIC, **raises({404: ["asset_not_found"], 503: ["query_timeout"]})},
    )
    async def token_metadata(
        self, clients: ClientsDep, settings: SettingsDep, tokenId: TokenIdPath
    ) -> token_schemas.TokenMetadata:
        """An asset's token metadata in OpenSea's standard, from its public detail; counts no view."""
        return await service.asset_token_metadata(clients, settings, tokenId)
