"""Data-source endpoints (seed plan 3.1.5): admins and `datasources:write` keys manage the sources the
oracle learns from, and queue their refreshes."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.lib.deps import ClientsDep, ContextDep, SettingsDep
from app.lib.openapi import links, raises
from app.lib.params import OPTIONAL_AUTH, PUBLIC, CursorParam, LimitParam, one_of
from app.lib.security import current_principal, principal_of, requires_permission
from app.oracle import model_schemas, schemas, service

PERMISSION = "datasources:write"
SourceIdPath = Annotated[
    str,
    PathParameter(
        description="the id a data source was created with",
        schema_extra={"pattern": service.SOURCE_ID_PATTERN},
    ),
]
KindParam = Annotated[str | None, QueryParameter(schema_extra=one_of(schemas.KINDS))]
TypeParam = Annotated[str | None, QueryParameter(name="type", schema_extra=one_of(schemas.TYPES))]
NOT_FOUND = {404: ["source_not_found"]}
SOURCE_LINKS = links(
    201,
    get_data_source={"sourceId": "$response.body#/id"},
    update_data_source={"sourceId": "$response.body#/id"},
    refresh_data_source={"sourceId": "$response.body#/id"},
    delete_data_source={"sourceId": "$response.body#/id"},
)


class DataSourceController(Controller):
    path = "/api/oracle/data-sources"
    tags = ["oracle"]
    guards = [requires_permission(PERMISSION)]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        opt={**raises({400: ["credentials_in_url"], 409: ["duplicate_name"]}), **SOURCE_LINKS},
    )
    async def create_data_source(
        self,
        request: Request,
        settings: SettingsDep,
        context: ContextDep,
        data: JSONBody[schemas.DataSourceCreate],
    ) -> Response[schemas.DataSourceOut]:
        """Add a `file` (CSV, JSON Lines) or `api` (JSON pages) source of `sales` or an `index`; 409 when
        the name is taken. Its credentials are stored encrypted and never returned; 400
        `credentials_in_url` for a query parameter named like one (`token`, `api_key`, ...)."""
        body = await service.create_source(settings, data, current_principal(request), context)
        return Response(body, status_code=HTTP_201_CREATED)

    @get(
        "/",
        opt=raises(
            {
                400: [
                    "invalid_cursor",
                    "invalid_kind",
                    "invalid_limit",
                    "invalid_type",
                ],
                503: ["query_timeout"],
            }
        ),
    )
    async def list_data_sources(
        self,
        request: Request,
        settings: SettingsDep,
        kind: KindParam = None,
        source_type: TypeParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> schemas.DataSourcePage:
        """The sources, newest first, with their status and metrics; keyset pages (`nextCursor`)."""
        return await service.list_sources(
            settings, kind=kind, source_type=source_type, limit=limit, cursor=cursor
        )

    @get("/{sourceId:str}", opt=raises(NOT_FOUND))
    async def get_data_source(self, sourceId: SourceIdPath) -> schemas.DataSourceOut:
        """One source: configuration (header names only), status, metrics and what its last fetch did."""
        return await service.get_source(sourceId)

    @patch(
        "/{sourceId:str}",
        opt=raises(
            {
                **NOT_FOUND,
                400: ["credentials_in_url"],
                409: ["duplicate_name", "field_not_for_type", "format_not_for_type", "url_not_for_type"],
            }
        ),
    )
    async def update_data_source(
        self,
        request: Request,
        settings: SettingsDep,
        context: ContextDep,
        sourceId: SourceIdPath,
        data: JSONBody[schemas.DataSourcePatch],
    ) -> schemas.DataSourceOut:
        """Change a source (not its type or kind); `headers` and `authentication` are replaced whole, and
        dropped when the URL moves to another origin unless the same change gives them again."""
        return await service.update_source(settings, sourceId, data, current_principal(request), context)

    @delete("/{sourceId:str}", status_code=HTTP_204_NO_CONTENT, opt=raises(NOT_FOUND))
    async def delete_data_source(self, request: Request, context: ContextDep, sourceId: SourceIdPath) -> None:
        """Delete a source, and the comparable sales or index points it brought."""
        await service.delete_source(sourceId, current_principal(request), context)

    @post("/{sourceId:str}/refresh", status_code=HTTP_202_ACCEPTED, opt=raises(NOT_FOUND))
    async def refresh_data_source(
        self, clients: ClientsDep, settings: SettingsDep, sourceId: SourceIdPath
    ) -> schemas.RefreshQueued:
        """Queue a refresh now (or answer the one queued or running); `statusUrl` reports its counts or
        its error code."""
        return await service.request_refresh(clients, settings, sourceId)


# ---------------------------------------------------------------- models, appraisals, performance

MANAGE = service.MANAGE_PERMISSION
ORACLE_READS = PUBLIC
VersionPath = Annotated[str, PathParameter(schema_extra={"pattern": model_schemas.VERSION})]
VersionParam = Annotated[
    str | None,
    QueryParameter(
        name="modelVersion",
        description="a version (GET /api/oracle/models); the current one when absent",
        schema_extra={"pattern": model_schemas.VERSION},
    ),
]
PredictionIdPath = Annotated[str, PathParameter(schema_extra={"pattern": service.SOURCE_ID_PATTERN})]


class ModelController(Controller):
    path = "/api/oracle/models"
    tags = ["oracle"]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        guards=[requires_permission(MANAGE)],
        opt=raises({400: ["timestamp_out_of_range"], 409: ["as_of_in_future", "training_in_progress"]}),
    )
    async def train_model(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        data: JSONBody[model_schemas.TrainRequest],
    ) -> model_schemas.JobQueued:
        """Train a new version now (an admin, or a key with `oracle:manage`); `statusUrl` reports its
        version and status. With `asOf`, only the sales before it are used."""
        return await service.request_training(
            clients, settings, data.asOf, current_principal(request), context
        )

    @get(
        "/",
        guards=[requires_permission(MANAGE)],
        opt=raises({400: ["invalid_cursor", "invalid_limit"], 503: ["query_timeout"]}),
    )
    async def list_models(
        self, settings: SettingsDep, limit: LimitParam = None, cursor: CursorParam = None
    ) -> model_schemas.ModelPage:
        """The versions, newest first (for those who manage the oracle: they name the data sources and
        features): data hash and counts, parameters, per-type status and backtest; `isCurrent` marks
        the one appraisals use. Anyone reads a version's figures at `GET /api/oracle/performance`."""
        return await service.list_models(settings, limit=limit, cursor=cursor)

    @get("/{version:str}", guards=[requires_permission(MANAGE)], opt=raises({404: ["model_not_found"]}))
    async def get_model(self, version: VersionPath) -> model_schemas.ModelOut:
        """One version."""
        return await service.get_model(version)


class AppraisalController(Controller):
    path = "/api/oracle/appraisals"
    tags = ["oracle"]
    guards = [requires_permission(MANAGE)]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        opt=raises({400: ["timestamp_out_of_range"], 409: ["as_of_in_future", "no_model"]}),
    )
    async def appraise_assets(
        self,
        request: Request,
        clients: ClientsDep,
        context: ContextDep,
        data: JSONBody[model_schemas.AppraisalRequest],
    ) -> model_schemas.JobQueued:
        """Appraise every asset, or `tokenIds`, with the current version, as of now or `asOf`; each gets an
        `aiOracleData` prediction, and its price when nothing newer set one. 409 `no_model` when no
        version can appraise (none ready, or none trained before `asOf`)."""
        return await service.request_appraisal(clients, data, current_principal(request), context)


class PredictionController(Controller):
    path = "/api/oracle"
    tags = ["oracle"]

    @get(
        "/predictions/{predictionId:str}",
        opt={**OPTIONAL_AUTH, **raises({404: ["prediction_not_found"]})},
    )
    async def get_prediction(
        self, request: Request, predictionId: PredictionIdPath
    ) -> model_schemas.PredictionOut:
        """One AI oracle prediction (seed 3.1.4): price and interval, confidence, feature importance, the
        version, and its outcome once the asset sold; `inputs` for signed-in callers only."""
        return await service.get_prediction(predictionId, signed_in=principal_of(request) is not None)

    @get("/performance", opt={**ORACLE_READS, **raises({404: ["model_not_found"]})})
    async def get_performance(
        self, clients: ClientsDep, modelVersion: VersionParam = None
    ) -> model_schemas.PerformanceOut:
        """How good a version is: its time-split backtest (MdAPE, p95 APE, MAPE, coverage of the
        50/80/90/95% intervals and their mean width, beside the naive baselines), and the live ledger of
        its appraisals scored against each asset's next sale."""
        return await service.performance(clients.redis, modelVersion)
