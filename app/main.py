"""The Litestar application: controllers, lifespan, dependencies and config, listed explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from bson.int64 import Int64
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from app.assets.controllers import (
    AssetController,
    ListingController,
    TokenMetadataController,
    UserAssetsController,
)
from app.assets.documents import Asset, PriceHistory
from app.audit.documents import AuditLog
from app.auth import tokens
from app.auth.controllers import AuthController
from app.auth.documents import Session, User
from app.auth.middleware import authentication_middleware
from app.chain import service as chain_service
from app.chain.controllers import ChainController
from app.chain.documents import ChainBlock, ChainEvent, DeploymentLog, IndexerCursor, OutboxTransaction
from app.config import ConfigurationError, Settings, check_settings, get_settings
from app.events import service as events_service
from app.events.controllers import StreamController
from app.events.documents import EventRecord
from app.lib import channels, openapi
from app.lib.bodies import check_json_body
from app.lib.clients import Clients, open_clients
from app.lib.context import RequestContext, request_context
from app.lib.errors import EXCEPTION_HANDLERS, errors_as_responses
from app.lib.logging import configure_logging
from app.lib.observability import (
    add_request_id_header,
    metrics_controller,
    prometheus_config,
    request_id_middleware,
)
from app.lib.params import plain_query
from app.lib.routing import answer_options_for_every_method
from app.market.controllers import MarketController, TransactionController, UserTransactionsController
from app.market.documents import Transaction
from app.media import service as media_service
from app.media.controllers import AssetMediaController, StorageController, UserAvatarController
from app.oracle import prediction_service
from app.oracle.controllers import (
    AppraisalController,
    DataSourceController,
    ModelController,
    PredictionController,
)
from app.oracle.documents import AIOracleData, ComparableSale, DataSource, IndexPoint, OracleModel
from app.oracle.round_documents import OracleRound
from app.system.controllers import JobController, SystemController
from app.webhooks.controllers import WebhookController
from app.webhooks.documents import WebhookDelivery, WebhookSubscription

MAX_BODY_BYTES = 1024 * 1024
# Every Beanie document, bound to MongoDB at start-up here and in the worker (workers/settings.py).
DOCUMENTS = [
    User,
    Session,
    Asset,
    PriceHistory,
    Transaction,
    AIOracleData,
    DataSource,
    ComparableSale,
    IndexPoint,
    OracleModel,
    OracleRound,
    AuditLog,
    DeploymentLog,
    OutboxTransaction,
    ChainEvent,
    ChainBlock,
    IndexerCursor,
    EventRecord,
    WebhookSubscription,
    WebhookDelivery,
]


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    check_settings(settings)
    try:
        tokens.check_key_settings(settings.auth.hs256_secrets(), settings.auth.jwt_kid)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def clients_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings, documents=DOCUMENTS) as clients:
            app.state.clients = clients
            yield

    def provide_clients(request: Request) -> Clients:
        return request.app.state.clients

    def provide_settings() -> Settings:
        return settings

    def provide_context(request: Request) -> RequestContext:
        return request_context(request)

    prometheus = prometheus_config()
    app = Litestar(
        route_handlers=[
            SystemController,
            JobController,
            metrics_controller(
                settings,
                before_scrape=[
                    partial(chain_service.refresh_metrics, settings=settings),
                    prediction_service.refresh_metrics,
                    events_service.refresh_metrics,
                ],
            ),
            AuthController,
            StorageController,
            AssetMediaController,
            UserAvatarController,
            AssetController,
            UserAssetsController,
            TokenMetadataController,
            TransactionController,
            UserTransactionsController,
            MarketController,
            ListingController,
            DataSourceController,
            ModelController,
            AppraisalController,
            PredictionController,
            ChainController,
            StreamController,
            WebhookController,
        ],
        lifespan=[clients_lifespan],
        plugins=[channels.channels_plugin(settings)],
        on_shutdown=[media_service.close_json_checks],  # the JSON check processes, if any started
        dependencies={
            "clients": Provide(provide_clients, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "context": Provide(provide_context, sync_to_thread=False),
        },
        middleware=[
            request_id_middleware,
            prometheus.middleware,
            errors_as_responses,
            authentication_middleware(settings),
        ],
        before_send=[add_request_id_header],
        exception_handlers=EXCEPTION_HANDLERS,
        # No JSON body of this API comes near this; routes that take files set their own limit.
        request_max_body_size=MAX_BODY_BYTES,
        type_encoders={Int64: int},  # PyMongo's 64-bit integers (app/lib/schemas.as_builtin)
        guards=[plain_query],
        before_request=check_json_body,
        cors_config=CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="DynamicVault API",
            version="0.1.0",
            description="Marketplace of tokenized real-world assets with an AI price oracle.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            operation_id_creator=openapi.operation_id,
        ),
        logging_config=None,
        debug=False,
    )
    openapi.finish(app)  # errors, security and links per operation (app/lib/openapi.py)
    answer_options_for_every_method(app)
    return app
