"""Transaction and market endpoints (seed plan 4.4); listings, an asset query, are the assets domain's."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from app.lib import params
from app.lib.deps import ClientsDep, SettingsDep
from app.lib.openapi import raises
from app.lib.params import (
    ADDRESS,
    ADDRESS_DOC,
    PUBLIC,
    CursorParam,
    FromParam,
    LimitParam,
    ToParam,
    WalletPath,
    one_of,
)
from app.market import schemas, service

TypeParam = Annotated[str | None, QueryParameter(schema_extra=one_of(schemas.TRANSACTION_TYPES))]
TokenParam = Annotated[
    int | None, QueryParameter(name="tokenId", schema_extra={"minimum": 0, "maximum": params.MAX_INT64})
]
StatusParam = Annotated[str | None, QueryParameter(schema_extra=one_of(schemas.TRANSACTION_STATUSES))]
# The refusals every list of transactions shares.
LISTING_ERRORS = {
    400: [
        "invalid_address",
        "invalid_cursor",
        "invalid_limit",
        "invalid_range",
        "invalid_status",
        "invalid_token_id",
        "invalid_type",
        "timestamp_out_of_range",
    ],
    503: ["query_timeout"],
}


def transaction_query(
    type: TypeParam = None,
    status: StatusParam = None,
    start: FromParam = None,
    end: ToParam = None,
    limit: LimitParam = None,
    cursor: CursorParam = None,
) -> schemas.TransactionQuery:
    """The query parameters that every list of transactions shares, as sent (the service checks them)."""
    return schemas.TransactionQuery(
        type=type,
        status=status,
        start=params.parse_time(start, "from"),
        end=params.parse_time(end, "to"),
        limit=limit,
        cursor=cursor,
    )


# The handlers that list transactions take those parameters through this one dependency.
LISTING = {"asked": Provide(transaction_query, sync_to_thread=False)}
TransactionQueryDep = NamedDependency[schemas.TransactionQuery]


class TransactionController(Controller):
    path = "/api/transactions"
    tags = ["market"]

    @get("/", opt={**PUBLIC, **raises(LISTING_ERRORS)}, dependencies=LISTING)
    async def list_transactions(
        self,
        request: Request,
        settings: SettingsDep,
        asked: TransactionQueryDep,
        token_id: TokenParam = None,
        wallet: Annotated[
            str | None,
            QueryParameter(
                description=f"the buyer or seller: {ADDRESS_DOC}", schema_extra={"pattern": ADDRESS}
            ),
        ] = None,
    ) -> schemas.TransactionPage:
        """Platform transactions, newest first, with keyset pages (`nextCursor`)."""
        wallet = params.parse_address(wallet, "wallet") if wallet is not None else None
        return await service.list_transactions(
            settings, msgspec.structs.replace(asked, token_id=token_id, wallet=wallet)
        )


class UserTransactionsController(Controller):
    path = "/api/users"
    tags = ["market"]

    @get("/{walletAddress:str}/transactions", opt={**PUBLIC, **raises(LISTING_ERRORS)}, dependencies=LISTING)
    async def user_transactions(
        self,
        request: Request,
        settings: SettingsDep,
        walletAddress: WalletPath,
        asked: TransactionQueryDep,
    ) -> schemas.TransactionPage:
        """Transactions where a wallet bought or sold, newest first."""
        wallet = params.parse_address(walletAddress)
        return await service.list_transactions(settings, msgspec.structs.replace(asked, wallet=wallet))


class MarketController(Controller):
    path = "/api/market"
    tags = ["market"]

    @get("/stats", opt={**PUBLIC, **raises({503: ["query_timeout"]})})
    async def stats(self, clients: ClientsDep, settings: SettingsDep) -> Response[schemas.MarketStats]:
        """Asset counts, listings, floor/mean/median prices by type, owners, and 24h/7d/30d volume."""
        # The cached JSON as stored (bytes pass through unchanged); the annotation documents its shape.
        return Response(await service.market_stats(clients, settings), media_type=MediaType.JSON)
