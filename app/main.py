"""The Litestar application: controllers, lifespan, dependencies and config, listed explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from app.assets.controllers import AssetController, UserAssetsController
from app.auth.controllers import AuthController
from app.auth.middleware import authentication_middleware
from app.config import Settings, check_settings, get_settings
from app.lib.clients import Clients, open_clients
from app.lib.errors import EXCEPTION_HANDLERS, errors_as_responses
from app.lib.logging import configure_logging
from app.lib.observability import (
    add_request_id_header,
    metrics_controller,
    prometheus_config,
    request_id_middleware,
)
from app.market.controllers import MarketController, TransactionController, UserTransactionsController
from app.media.controllers import AssetMediaController, StorageController, UserAvatarController
from app.system import audit
from app.system.controllers import JobController, SystemController


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    check_settings(settings)
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def clients_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings) as clients:
            app.state.clients = clients
            await audit.apply_retention(settings.audit_retention_days)
            yield

    def provide_clients(request: Request) -> Clients:
        return request.app.state.clients

    def provide_settings() -> Settings:
        return settings

    prometheus = prometheus_config()
    return Litestar(
        route_handlers=[
            SystemController,
            JobController,
            metrics_controller(settings),
            AuthController,
            StorageController,
            AssetMediaController,
            UserAvatarController,
            AssetController,
            UserAssetsController,
            TransactionController,
            UserTransactionsController,
            MarketController,
        ],
        lifespan=[clients_lifespan],
        dependencies={
            "clients": Provide(provide_clients, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        middleware=[
            request_id_middleware,
            prometheus.middleware,
            errors_as_responses,
            authentication_middleware(settings),
        ],
        before_send=[add_request_id_header],
        exception_handlers=EXCEPTION_HANDLERS,
        cors_config=CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="DynamicVault API",
            version="0.1.0",
            description="Marketplace of tokenized real-world assets with an AI price oracle.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                    "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
                }
            ),
            # Either credential works wherever one is needed; routes open to anonymous callers say so.
            security=[{"BearerToken": []}, {"ApiKey": []}],
        ),
        logging_config=None,
        debug=False,
    )
