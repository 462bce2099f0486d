"""Request ids, access logs and Prometheus metrics for every request; the operator token."""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.lib.errors import Unauthorized
from app.lib.openapi import answers_text
from app.lib.security import OPERATOR_SCHEME

REQUEST_ID_HEADER = "x-request-id"
_DENIAL_START, _DENIAL_BODY = "websocket.http.response.start", "websocket.http.response.body"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
log = structlog.get_logger("http")


def _request_id(scope: Scope) -> str:
    """The request's id: the caller's X-Request-ID when well formed, else a new one; kept in the scope."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        state["request_id"] = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return state["request_id"]


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """A before-send hook: every response carries the id, including those no route or middleware made.
    Async, as it runs on every message sent (each WebSocket frame too): Litestar runs a sync hook in a
    worker thread."""
    kind = message["type"]
    # A WebSocket handshake refused with an HTTP answer (the denial extension) carries it too.
    if (kind == "http.response.start" and scope["type"] == ScopeType.HTTP) or kind == _DENIAL_START:
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = _request_id(scope)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Bind the request id to every log line of the request, and write one access line at its end."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    client=(scope.get("client") or ("", 0))[0],
                )

    return middleware


class _Metrics(PrometheusMiddleware):
    """Litestar's request metrics, which also count a WebSocket handshake refused with an HTTP answer (the
    denial extension, app/lib/errors.py) at that answer's status, where Litestar's count it as 200."""

    def _get_wrapped_send(self, send: Send, request_span: dict[str, float]) -> Callable:
        wrapped = super()._get_wrapped_send(send, request_span)

        async def denial_aware(message: Message) -> None:
            if message["type"] == _DENIAL_START:
                request_span["status_code"] = message["status"]
            elif message["type"] == _DENIAL_BODY and not message.get("more_body"):
                request_span["end_time"] = time.perf_counter()
                request_span["duration"] = request_span["end_time"] - request_span["start_time"]
            await wrapped(message)

        return denial_aware


def prometheus_config() -> PrometheusConfig:
    # group_path labels by route template (/api/assets/{tokenId}), keeping label cardinality bounded.
    return PrometheusConfig(
        app_name="dynamicvault",
        prefix="dynamicvault",
        group_path=True,
        exclude_unhandled_paths=True,
        middleware_class=_Metrics,
    )


def is_operator(settings: Settings, authorization: str | None) -> bool:
    """Whether a request may read metrics and readiness details: it sends `Bearer <METRICS_TOKEN>`.

    Without a token, development and tests are open (as `make run` prints) and production is closed.
    """
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        return not settings.is_production
    scheme, _, value = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def metrics_controller(
    settings: Settings, before_scrape: Sequence[Callable[[Any], Awaitable[None]]] = ()
) -> type[PrometheusController]:
    """Litestar's /metrics, for the operator token only (Prometheus: `authorization: {credentials: ...}`).

    Each of `before_scrape` is awaited with the app's clients before the figures are rendered: gauges
    that a scrape should see fresh (the chain's head, lag and signer balance) are set there.
    """

    def operator_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not is_operator(settings, connection.headers.get("authorization")):
            raise Unauthorized(
                "metrics need the operator token (METRICS_TOKEN) as a bearer token",
                code="operator_token_required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    operator_only.errors = {401: ("operator_token_required",)}
    token_needed = bool(settings.metrics_token) or settings.is_production
    operator = [{OPERATOR_SCHEME: []}]

    async def refresh(request: Request) -> None:
        for hook in before_scrape:
            await hook(request.app.state.clients)

    class MetricsController(PrometheusController):
        guards = [operator_only]
        before_request = refresh
        opt = {
            "rate_limit": "system",
            "security": operator if token_needed else [{}, *operator],
            **answers_text(200, "text/plain", "Prometheus text exposition format"),
        }

    return MetricsController
