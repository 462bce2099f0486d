"""Data-source endpoints (seed plan 3.1.5): admins and `datasources:write` keys manage the sources the
oracle learns from, and queue their refreshes."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.lib.deps import ClientsDep, ContextDep, SettingsDep
from app.lib.openapi import links, raises
from app.lib.params import ADDRESS_DOC, MAX_INT64, OPTIONAL_AUTH, PUBLIC, CursorParam, LimitParam, one_of
from app.lib.security import current_principal, principal_of, requires_permission
from app.oracle import model_schemas, prediction_service, round_schemas, schemas, service, submissions
from app.oracle.round_documents import ROUND_STATUSES

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
SUBMIT = "oracle:submit"
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


IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description="makes a retry safe: the same key and body answer the stored prediction again",
        schema_extra={"pattern": r"^[\x21-\x7e]{1,255}$"},
    ),
]
TokenParam = Annotated[
    int | None, QueryParameter(name="tokenId", schema_extra={"minimum": 0, "maximum": MAX_INT64})
]
OperatorParam = Annotated[
    str | None,
    QueryParameter(
        description=f"an operator's wallet ({ADDRESS_DOC}), or `platform` for the platform's appraisals",
        schema_extra={"pattern": r"^(0x[0-9a-fA-F]{40}|platform)$"},
    ),
]
PredictionStatusParam = Annotated[str | None, QueryParameter(schema_extra=one_of(submissions.STATUSES))]
RoundStatusParam = Annotated[str | None, QueryParameter(schema_extra=one_of(ROUND_STATUSES))]
RoundIdPath = Annotated[str, PathParameter(schema_extra={"pattern": round_schemas.ROUND_ID})]
LIST_ERRORS = {
    400: ["invalid_cursor", "invalid_limit", "invalid_status", "invalid_token_id"],
    503: ["query_timeout"],
}
SUBMIT_ERRORS = {
    400: [
        "ambiguous_amount",
        "amount_out_of_range",
        "interval_excludes_price",
        "invalid_amount",
        "invalid_idempotency_key",
        "invalid_inputs",
        "invalid_interval",
        "price_required",
    ],
    404: ["asset_not_found"],
    413: ["payload_too_large"],
    422: ["idempotency_key_reused"],
    429: ["too_many_submissions"],
}


class PredictionController(Controller):
    path = "/api/oracle"
    tags = ["oracle"]

    @post(
        "/price-prediction",
        status_code=HTTP_201_CREATED,
        guards=[requires_permission(SUBMIT)],
        request_max_body_size=round_schemas.MAX_BODY_BYTES,
        opt={
            **raises(SUBMIT_ERRORS),
            **links(201, get_prediction={"predictionId": "$response.body#/predictionId"}),
        },
    )
    async def submit_prediction(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        data: JSONBody[round_schemas.PredictionSubmit],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[round_schemas.PredictionCreated]:
        """An operator's prediction of a token's price (seed 4.3), for a key with `oracle:submit` or the
        `oracle` role. It joins the token's open round (`round`), whose answer is the accuracy-weighted
        median of the operators and the platform; it is `pending` until the round closes, then `accepted`
        or `rejected` with a reason. With an `Idempotency-Key`, a retry answers the stored prediction
        again (`Idempotent-Replayed: true`); the same key with another body is 422."""
        body, created = await prediction_service.submit_prediction(
            clients.redis, settings, data, current_principal(request), idempotency_key
        )
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return Response(body, status_code=HTTP_201_CREATED, headers=headers)

    @get(
        "/predictions",
        opt={**OPTIONAL_AUTH, **raises({**LIST_ERRORS, 400: [*LIST_ERRORS[400], "invalid_operator"]})},
    )
    async def list_predictions(
        self,
        request: Request,
        settings: SettingsDep,
        token_id: TokenParam = None,
        operator: OperatorParam = None,
        status: PredictionStatusParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> model_schemas.PredictionPage:
        """Predictions newest first: the platform's appraisals and the operators' submissions, with their
        status in rounds; keyset pages (`nextCursor`). An operator's `inputs` are shown to it alone."""
        return await prediction_service.list_predictions(
            settings,
            principal_of(request),
            token_id=token_id,
            operator=operator,
            status=status,
            limit=limit,
            cursor=cursor,
        )

    @get(
        "/predictions/{predictionId:str}",
        opt={**OPTIONAL_AUTH, **raises({404: ["prediction_not_found"]})},
    )
    async def get_prediction(
        self, request: Request, predictionId: PredictionIdPath
    ) -> model_schemas.PredictionOut:
        """One AI oracle prediction (seed 3.1.4): price and interval, confidence, feature importance, the
        version, its round and verdict, and its outcome once the asset sold; `inputs` for the operator
        who submitted it and admins (a platform appraisal's, for signed-in callers)."""
        return await prediction_service.get_prediction(predictionId, principal_of(request))

    @get("/rounds", opt={**ORACLE_READS, **raises(LIST_ERRORS)})
    async def list_rounds(
        self,
        settings: SettingsDep,
        token_id: TokenParam = None,
        status: RoundStatusParam = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> round_schemas.RoundPage:
        """Rounds, latest window first, each with its participants, answer, gates and decision."""
        return await prediction_service.list_rounds(
            settings, token_id=token_id, status=status, limit=limit, cursor=cursor
        )

    @get("/rounds/{roundId:str}", opt={**ORACLE_READS, **raises({404: ["round_not_found"]})})
    async def get_round(self, roundId: RoundIdPath) -> round_schemas.RoundOut:
        """One round, for audit: every participant with its weight and verdict, the answer, each gate's
        verdict, the publication decision with its reason, and the push to the PriceOracle."""
        return await prediction_service.get_round(roundId)

    @get("/operators", opt=ORACLE_READS)
    async def list_operators(self, clients: ClientsDep, settings: SettingsDep) -> round_schemas.OperatorsOut:
        """Each operator (and the platform): submissions, acceptance rate and rejections by reason, its
        weight in rounds, and its live MdAPE, p95 APE and band coverage against later sales."""
        return await prediction_service.list_operators(clients.redis, settings)

    @get("/performance", opt={**ORACLE_READS, **raises({404: ["model_not_found"]})})
    async def get_performance(
        self, clients: ClientsDep, settings: SettingsDep, modelVersion: VersionParam = None
    ) -> model_schemas.PerformanceOut:
        """How good a version is: its time-split backtest (MdAPE, p95 APE, MAPE, coverage of the
        50/80/90/95% intervals and their mean width, beside the naive baselines), the live ledger of
        its appraisals scored against each asset's next sale, and every operator's live record."""
        return await service.performance(clients.redis, settings, modelVersion)
