"""Request ids, access logs and Prometheus metrics for every request."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
log = structlog.get_logger("http")


def _request_id(scope: Scope) -> str:
    """The request's id: the caller's X-Request-ID when well formed, else a new one; kept in the scope."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        state["request_id"] = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    return state["request_id"]


def add_request_id_header(message: Message, scope: Scope) -> None:
    """A before-send hook: every response carries the id, including those no route or middleware made."""
    if message["type"] == "http.response.start" and scope["type"] == ScopeType.HTTP:
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


def prometheus_config() -> PrometheusConfig:
    # group_path labels by route template (/api/assets/{tokenId}), keeping label cardinality bounded.
    return PrometheusConfig(
        app_name="dynamicvault", prefix="dynamicvault", group_path=True, exclude_unhandled_paths=True
    )
