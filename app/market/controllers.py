"""Transaction and market endpoints (seed plan 4.4); listings, an asset query, are the assets domain's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, MediaType, Request, Response, get
from litestar.params import FromPath, QueryParameter

from app.lib import params
from app.lib.deps import ClientsDep, SettingsDep
from app.lib.params import PUBLIC, CursorParam, LimitParam, refuse_operator_params
from app.market import schemas, service

TypeParam = Annotated[str | None, QueryParameter(description="mint, list, buy, sell, delist or transfer")]
TokenParam = Annotated[int | None, QueryParameter(name="tokenId")]
StatusParam = Annotated[str | None, QueryParameter(description="pending, completed or failed")]
FromParam = Annotated[datetime | None, QueryParameter(name="from", description="ISO-8601, inclusive")]
ToParam = Annotated[datetime | None, QueryParameter(name="to", description="ISO-8601, exclusive")]


class TransactionController(Controller):
    path = "/api/transactions"
    tags = ["market"]

    @get("/", opt=PUBLIC)
    async def list_transactions(
        self,
        request: Request,
        settings: SettingsDep,
        type: TypeParam = None,
        token_id: TokenParam = None,
        wallet: Annotated[str | None, QueryParameter(description="buyer or seller address")] = None,
        status: StatusParam = None,
        start: FromParam = None,
        end: ToParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> schemas.TransactionPage:
        """Platform transactions, newest first, with keyset pages (`nextCursor`)."""
        refuse_operator_params(request)
        return await service.list_transactions(
            settings,
            limit=limit,
            cursor=cursor,
            type=type,
            token_id=token_id,
            wallet=params.parse_address(wallet, "wallet") if wallet is not None else None,
            status=status,
            start=start,
            end=end,
        )


class UserTransactionsController(Controller):
    path = "/api/users"
    tags = ["market"]

    @get("/{walletAddress:str}/transactions", opt=PUBLIC)
    async def user_transactions(
        self,
        request: Request,
        settings: SettingsDep,
        walletAddress: FromPath[str],
        type: TypeParam = None,
        status: StatusParam = None,
        start: FromParam = None,
        end: ToParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> schemas.TransactionPage:
        """Transactions where a wallet bought or sold, newest first."""
        refuse_operator_params(request)
        return await service.list_transactions(
            settings,
            limit=limit,
            cursor=cursor,
            type=type,
            wallet=params.parse_address(walletAddress),
            status=status,
            start=start,
            end=end,
        )


class MarketController(Controller):
    path = "/api/market"
    tags = ["market"]

    @get("/stats", opt=PUBLIC)
    async def stats(self, clients: ClientsDep, settings: SettingsDep) -> Response[schemas.MarketStats]:
        """Asset counts, listings, floor/mean/median prices by type, owners, and 24h/7d/30d volume."""
        # The cached JSON as stored (bytes pass through unchanged); the annotation documents its shape.
        return Response(await service.market_stats(clients, settings), media_type=MediaType.JSON)
